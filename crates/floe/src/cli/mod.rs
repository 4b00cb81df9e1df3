//! The commands of the `floe` command line that talk to a running server, through
//! [`floe_client`]: `floe send`, `floe get`, in [`control`] `floe streams|sinks|pipelines …`,
//! and in [`setup`] the walk-through `floe setup` (docs/cli.md). `main.rs` parses the command
//! line and calls these.
//!
//! Exit codes, the same for every one of them (docs/cli.md, "Exit codes"):
//! 0 done; 1 refused by the server (a `4xx`: its code and message go to stderr), or for `floe
//! send` rows rejected; 2 usage (clap's, and local input that cannot be used: a file that
//! cannot be read, JSON that does not parse, a URL that is not `http://`); 3 the server could
//! not be reached, failed (`5xx`) or answered something that is not floe's.

pub mod control;
pub mod setup;

use std::io::{BufRead, Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use floe_client::{Client, EXIT_REFUSED, EXIT_USAGE, Error, Lookup};

/// How to reach the server: `--url` and `--token` of every command that talks to one.
#[derive(clap::Args, Debug, Clone, PartialEq, Eq)]
pub struct ConnectArgs {
    /// Server URL.
    #[arg(long, env = "FLOE_URL", default_value = floe_client::DEFAULT_URL)]
    pub url: String,
    /// Bearer token (scope `admin` for streams, sinks and pipelines); default `$FLOE_TOKEN`.
    #[arg(long, env = "FLOE_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
}

impl ConnectArgs {
    /// The client these options describe.
    pub fn client(&self) -> Result<Client, Error> {
        client(&self.url, self.token.as_deref())
    }
}

fn client(url: &str, token: Option<&str>) -> Result<Client, Error> {
    let client = Client::new(url)?;
    Ok(match token {
        Some(t) if !t.is_empty() => client.with_token(t),
        _ => client,
    })
}

/// An error's line for stderr: the server's code and message (and the HTTP status), or what
/// else went wrong.
pub fn describe(error: &Error) -> String {
    match error {
        Error::Refused {
            status, code, message, ..
        }
        | Error::Server { status, code, message } => {
            let status = floe_client::status_text(*status);
            match (code.is_empty(), status.ends_with(message.as_str())) {
                (false, _) => format!("{code}: {message} ({status})"),
                (true, true) => status,
                (true, false) => format!("{status}: {message}"),
            }
        }
        other => other.to_string(),
    }
}

/// Prints `error: …` for `error` to stderr and returns its exit code.
pub fn fail(error: &Error) -> ExitCode {
    eprintln!("error: {}", describe(error));
    ExitCode::from(error.exit_code())
}

/// Prints `error: …` for a local problem (a file, a flag's value) and returns exit code 2.
pub fn usage(message: impl std::fmt::Display) -> ExitCode {
    eprintln!("error: {message}");
    ExitCode::from(EXIT_USAGE)
}

/// A file's text, or a usage error naming it.
pub(crate) fn read_file(path: &Path) -> Result<String, String> {
    std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))
}

/// The rows of `floe send`'s input as JSON text: the values of a JSON array when its first
/// non-blank character is `[`, else the non-blank lines (NDJSON).
pub fn split_rows(text: &str) -> anyhow::Result<Vec<String>> {
    if text.trim_start().starts_with('[') {
        let values: Vec<&serde_json::value::RawValue> =
            serde_json::from_str(text).context("the file is not a valid JSON array")?;
        Ok(values.into_iter().map(|v| v.get().to_string()).collect())
    } else {
        Ok(std::io::Cursor::new(text.as_bytes())
            .lines()
            .collect::<Result<Vec<_>, _>>()?
            .into_iter()
            .filter(|l| !l.trim().is_empty())
            .collect())
    }
}

/// `floe send`: reads NDJSON or a JSON array (a file, or stdin for `-` or none) and sends it in
/// batches ([`floe_client::Client::send_json_texts`]); prints what was accepted and rejected.
/// Exit 0 when nothing was rejected, 1 when rows were rejected or the server refused the
/// stream, 3 when it could not be reached or failed.
pub async fn send(stream: &str, file: Option<PathBuf>, url: &str, token: Option<&str>) -> anyhow::Result<ExitCode> {
    let mut text = String::new();
    match file.as_deref() {
        None => std::io::stdin().read_to_string(&mut text)?,
        Some(p) if p.as_os_str() == "-" => std::io::stdin().read_to_string(&mut text)?,
        Some(p) => std::fs::File::open(p)
            .with_context(|| format!("open {}", p.display()))?
            .read_to_string(&mut text)?,
    };
    let rows = split_rows(&text)?;
    let client = match client(url, token) {
        Ok(c) => c,
        Err(e) => return Ok(fail(&e)),
    };
    let (report, stopped) = match client.send_json_texts(stream, &rows).await {
        Ok(report) => (report, None),
        Err(e) => (e.report.clone(), Some(e)),
    };
    for f in &report.failures {
        let status = f.error.status().map(floe_client::status_text).unwrap_or_default();
        let message = match &f.error {
            Error::Refused { message, .. } | Error::Server { message, .. } => message.clone(),
            other => other.to_string(),
        };
        eprintln!("rows {}..{}: {status}: {message}", f.rows.start + 1, f.rows.end);
        for r in f.row_errors.iter().take(10) {
            eprintln!("  row {} field {:?}: {}", r.row + 1, r.field, r.message);
        }
    }
    println!(
        "accepted {} rows, rejected {} rows ({} failed requests)",
        report.accepted,
        report.rejected,
        report.failures.len()
    );
    if let Some(stopped) = stopped {
        eprintln!(
            "error: {}; rows {}..{} were not sent or not confirmed",
            describe(&stopped.error),
            stopped.unconfirmed.start + 1,
            stopped.unconfirmed.end
        );
        return Ok(ExitCode::from(stopped.exit_code()));
    }
    Ok(if report.rejected == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_REFUSED)
    })
}

/// `floe get`: a point lookup ([`floe_client::Client::lookup`]); prints one JSON object per
/// row. Exit 1 with the server's message when it refuses, 3 when it cannot be reached or fails.
pub async fn get(
    table: &str,
    predicates: &[String],
    lookup: Lookup,
    url: &str,
    token: Option<&str>,
) -> anyhow::Result<ExitCode> {
    let mut lookup = lookup;
    for p in predicates {
        let Some((k, v)) = p.split_once('=') else {
            anyhow::bail!("{p:?} is not COLUMN=VALUE");
        };
        lookup.predicates.push((k.to_string(), v.to_string()));
    }
    let client = match client(url, token) {
        Ok(c) => c,
        Err(e) => return Ok(fail(&e)),
    };
    match client.lookup(table, &lookup).await {
        Ok(answer) => {
            let mut out = std::io::stdout().lock();
            for row in &answer.rows {
                writeln!(out, "{row}")?;
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            match &e {
                Error::Refused { status, message, .. } | Error::Server { status, message, .. } => {
                    eprintln!("error: {}: {message}", floe_client::status_text(*status));
                }
                other => eprintln!("error: {}", describe(other)),
            }
            Ok(ExitCode::from(e.exit_code()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_of_an_array_or_ndjson() {
        assert_eq!(
            split_rows("[{\"a\": 1}, {\"a\": [2, 3]}]").unwrap(),
            ["{\"a\": 1}", "{\"a\": [2, 3]}"]
        );
        assert_eq!(
            split_rows("{\"a\":1}\n\n  \n{\"a\":2}\r\n").unwrap(),
            ["{\"a\":1}", "{\"a\":2}"]
        );
        assert!(split_rows("[{\"a\": 1}").is_err());
    }

    #[test]
    fn errors_are_described_by_code_and_message() {
        let refused = Error::Refused {
            status: 409,
            code: "in_use".into(),
            message: "read by p".into(),
            body: serde_json::Value::Null,
        };
        assert_eq!(describe(&refused), "in_use: read by p (409 Conflict)");
        let bare = Error::Refused {
            status: 404,
            code: String::new(),
            message: "Not Found".into(),
            body: serde_json::Value::Null,
        };
        assert_eq!(describe(&bare), "404 Not Found");
        assert_eq!(
            describe(&Error::Unreachable("GET x: refused".into())),
            "unreachable: GET x: refused"
        );
    }
}
