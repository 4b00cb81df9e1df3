//! The control plane over real HTTP (a loopback listener serving `floe serve`'s router, real
//! stream logs in a temp folder, the SQLite catalog, Iceberg tables read back with floe's SQL):
//! objects created, changed and deleted at run time, the refusals that leave everything as it
//! was, a pipeline's versions, the admin scope, restarts that keep what was created — and the
//! OpenAPI document checked against the routes.

use std::collections::BTreeSet;
use std::time::Duration;

use arrow::array::AsArray;
use floe::config::Config;
use floe::control::ControlPlane;
use floe::node::App;
use floe::supervisor::Supervisor;
use serde_json::{Value, json};

type TestResult = Result<(), Box<dyn std::error::Error + Send + Sync>>;

/// A floe with one declarative stream and nothing else.
const CONFIG: &str = r#"
[server]
data_dir = "data"

[[streams]]
name = "declared"
"#;

struct Node {
    app: std::sync::Arc<App>,
    supervisor: std::sync::Arc<Supervisor>,
    base: String,
    server: tokio::task::JoinHandle<()>,
}

impl Node {
    async fn start(config: Config) -> Node {
        let app = App::open(config).await.expect("open");
        let supervisor = Supervisor::start(app.clone());
        let control = ControlPlane::open(supervisor.clone()).await.expect("control plane");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let base = format!("http://{}", listener.local_addr().expect("addr"));
        let router = floe::server::full_router(app.clone(), control);
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        Node {
            app,
            supervisor,
            base,
            server,
        }
    }

    async fn stop(self) {
        self.server.abort();
        self.supervisor.shutdown(Duration::from_secs(30)).await;
        for s in self.app.streams.values() {
            s.log.close();
        }
        self.app.catalog.close().await;
    }
}

fn client() -> reqwest::Client {
    reqwest::Client::builder().no_proxy().build().expect("client")
}

async fn call(method: reqwest::Method, url: String, body: Option<Value>) -> (u16, Value) {
    let mut req = client().request(method, url);
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await.expect("request");
    let status = resp.status().as_u16();
    let text = resp.text().await.expect("body");
    (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
}

/// The ids in `table`, sorted, with the second column; empty while the table does not exist.
async fn rows(app: &App, table: &str) -> Vec<(i64, String)> {
    let Ok(out) = floe::query::run_sql(
        &app.catalog,
        &format!("SELECT id, shape FROM {table}"),
        &app.config.limits,
    )
    .await
    else {
        return vec![];
    };
    let mut v = Vec::new();
    for b in &out.batches {
        let ids = b.column(0).as_primitive::<arrow::datatypes::Int64Type>();
        let shapes = arrow::compute::cast(b.column(1), &arrow::datatypes::DataType::Utf8).expect("cast");
        let shapes = shapes.as_string::<i32>();
        for i in 0..b.num_rows() {
            v.push((ids.value(i), shapes.value(i).to_string()));
        }
    }
    v.sort();
    v
}

async fn wait_rows(app: &App, table: &str, n: usize) -> Vec<(i64, String)> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let got = rows(app, table).await;
        if got.len() >= n || tokio::time::Instant::now() >= deadline {
            return got;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn send(base: &str, stream: &str, ids: std::ops::Range<i64>) -> u16 {
    let body: Vec<Value> = ids.map(|i| json!({"id": i})).collect();
    call(
        reqwest::Method::POST,
        format!("{base}/v1/streams/{stream}/events"),
        Some(Value::Array(body)),
    )
    .await
    .0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn objects_created_at_run_time_run_change_by_version_and_survive_a_restart() -> TestResult {
    use reqwest::Method as M;
    let dir = tempfile::tempdir()?;
    let config = Config::from_toml(CONFIG, &dir.path().join("floe.toml"), dir.path())?;
    let node = Node::start(config.clone()).await;
    let b = node.base.clone();

    // A stream in the managed product's schema-file format, a sink, a pipeline.
    let (s, v) = call(
        M::POST,
        format!("{b}/v1/streams"),
        Some(json!({"name": "events", "schema": {"fields": [{"name": "id", "type": "int64", "required": true}]}})),
    )
    .await;
    assert_eq!(s, 201, "{v}");
    assert_eq!((v["origin"].as_str(), v["version"].as_i64()), (Some("api"), Some(1)));
    assert_eq!(v["config"]["fields"][0]["type"], "int64", "{v}");
    let (s, v) = call(
        M::POST,
        format!("{b}/v1/sinks"),
        Some(json!({"name": "t", "type": "iceberg", "table": "cp.t", "rolling": {"interval_seconds": 1}})),
    )
    .await;
    assert_eq!(s, 201, "{v}");

    // Refusals change nothing: SQL that does not plan, a name taken (of any origin), a key the
    // kind does not have, an object of floe.toml, a files sink outside the warehouse.
    let before = node.app.catalog.objects().await?.len();
    for (path, body, status, code) in [
        (
            "pipelines",
            json!({"name": "p", "sql": "INSERT INTO t SELECT nope FROM events"}),
            400,
            "invalid_config",
        ),
        ("streams", json!({"name": "declared"}), 409, "already_exists"),
        ("streams", json!({"name": "events"}), 409, "already_exists"),
        (
            "sinks",
            json!({"name": "u", "type": "iceberg", "table": "cp.u", "colour": "red"}),
            400,
            "bad_request",
        ),
        (
            "sinks",
            json!({"name": "f", "type": "files", "path": "/etc/floe"}),
            400,
            "invalid_config",
        ),
        ("streams", json!({"name": "bad name!"}), 400, "invalid_config"),
    ] {
        let (s, v) = call(M::POST, format!("{b}/v1/{path}"), Some(body.clone())).await;
        assert_eq!((s, v["error"]["code"].as_str()), (status, Some(code)), "{body} -> {v}");
    }
    let (s, v) = call(
        M::PATCH,
        format!("{b}/v1/streams/declared"),
        Some(json!({"unknown_fields": "drop"})),
    )
    .await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (409, Some("declared_in_config")),
        "{v}"
    );
    let (s, _) = call(M::DELETE, format!("{b}/v1/streams/declared"), None).await;
    assert_eq!(s, 409);
    assert_eq!(node.app.catalog.objects().await?.len(), before);

    let (s, v) = call(
        M::POST,
        format!("{b}/v1/pipelines"),
        Some(json!({"name": "p", "sql": "INSERT INTO t SELECT id, 'v1' AS shape FROM events", "start": "earliest"})),
    )
    .await;
    assert_eq!(s, 201, "{v}");
    assert_eq!(send(&b, "events", 0..100).await, 200);
    let got = wait_rows(&node.app, "cp.t", 100).await;
    assert_eq!(got.len(), 100);
    assert!(got.iter().all(|(_, s)| s == "v1"));

    // A pipeline writing a column the table does not have is refused before anything stops.
    let (s, v) = call(
        M::PATCH,
        format!("{b}/v1/pipelines/p"),
        Some(json!({"sql": "INSERT INTO t SELECT id, 'v2' AS shape, id AS extra FROM events"})),
    )
    .await;
    assert_eq!((s, v["error"]["code"].as_str()), (400, Some("invalid_config")), "{v}");
    assert!(v["error"]["message"].as_str().unwrap_or("").contains("extra"), "{v}");

    // Version 2 takes over where version 1 committed.
    let (s, v) = call(
        M::PATCH,
        format!("{b}/v1/pipelines/p"),
        Some(json!({"sql": "INSERT INTO t SELECT id, 'v2' AS shape FROM events"})),
    )
    .await;
    assert_eq!((s, v["version"].as_i64()), (200, Some(2)), "{v}");
    assert_eq!(send(&b, "events", 100..150).await, 200);
    let got = wait_rows(&node.app, "cp.t", 150).await;
    let ids: Vec<i64> = got.iter().map(|(i, _)| *i).collect();
    assert_eq!(ids, (0..150).collect::<Vec<_>>(), "every row once");
    assert!(got.iter().all(|(i, s)| (*i < 100) == (s == "v1")), "{got:?}");
    let (_, h) = call(M::GET, format!("{b}/v1/pipelines/p/versions"), None).await;
    let versions = h["versions"].as_array().expect("versions");
    assert_eq!(versions.len(), 2, "{h}");
    assert_eq!(versions[0]["end_offsets"]["t"], 100, "{h}");
    assert_eq!(versions[1]["start_offsets"]["t"], 100, "{h}");
    assert!(versions[1]["ended_at"].is_null());
    let (_, p) = call(M::GET, format!("{b}/v1/pipelines/p"), None).await;
    assert_eq!(p["status"]["state"], "running", "{p}");
    assert_eq!(p["status"]["statements"][0]["committed_offset"], 150, "{p}");
    assert_eq!(p["status"]["statements"][0]["lag_rows"], 0, "{p}");

    // A stream read by a pipeline is deleted only with force.
    let (s, v) = call(M::DELETE, format!("{b}/v1/streams/events"), None).await;
    assert_eq!((s, v["error"]["code"].as_str()), (409, Some("in_use")), "{v}");
    let (_, list) = call(M::GET, format!("{b}/v1/streams"), None).await;
    let origins: BTreeSet<(String, String)> = list["streams"]
        .as_array()
        .expect("streams")
        .iter()
        .map(|o| {
            (
                o["name"].as_str().unwrap_or("").into(),
                o["origin"].as_str().unwrap_or("").into(),
            )
        })
        .collect();
    assert_eq!(
        origins,
        BTreeSet::from([("declared".into(), "config".into()), ("events".into(), "api".into())])
    );

    // A restart runs what was created, from where it committed.
    node.stop().await;
    let node = Node::start(config.clone()).await;
    let b = node.base.clone();
    let (s, v) = call(M::GET, format!("{b}/v1/pipelines/p"), None).await;
    assert_eq!(
        (s, v["version"].as_i64(), v["origin"].as_str()),
        (200, Some(2), Some("api")),
        "{v}"
    );
    assert_eq!(send(&b, "events", 150..160).await, 200);
    let got = wait_rows(&node.app, "cp.t", 160).await;
    assert_eq!(got.len(), 160, "nothing replayed or lost across the restart");
    assert!(got.iter().all(|(i, s)| (*i < 100) == (s == "v1")));

    let (s, v) = call(M::DELETE, format!("{b}/v1/streams/events?force=true"), None).await;
    assert_eq!(s, 200, "{v}");
    let (s, _) = call(M::GET, format!("{b}/v1/pipelines/p"), None).await;
    assert_eq!(s, 404);
    let (s, v) = call(M::DELETE, format!("{b}/v1/sinks/t?purge=true"), None).await;
    assert_eq!(s, 200, "{v}");
    assert!(node.app.catalog.objects().await?.is_empty());
    assert_eq!(send(&b, "events", 0..1).await, 404);
    node.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_tokens_the_control_plane_needs_admin() -> TestResult {
    let dir = tempfile::tempdir()?;
    let toml = format!(
        "{CONFIG}\n[[auth.tokens]]\ntoken = \"root\"\nscopes = [\"admin\"]\n[[auth.tokens]]\ntoken = \"reader\"\nscopes = [\"read\", \"send:*\"]\n"
    );
    let config = Config::from_toml(&toml, &dir.path().join("floe.toml"), dir.path())?;
    let node = Node::start(config).await;
    let b = node.base.clone();
    for (token, status) in [
        (None, 401),
        (Some("nope"), 401),
        (Some("reader"), 403),
        (Some("root"), 201),
    ] {
        let mut req = client().post(format!("{b}/v1/streams")).json(&json!({"name": "s"}));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        assert_eq!(req.send().await?.status().as_u16(), status, "{token:?}");
    }
    for (token, status) in [(None, 401), (Some("reader"), 403), (Some("root"), 200)] {
        let mut req = client().get(format!("{b}/v1/streams/s"));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        assert_eq!(req.send().await?.status().as_u16(), status, "{token:?}");
    }
    node.stop().await;
    Ok(())
}

/// The paths of `docs/openapi.json`, as `(METHOD, path)`.
fn documented() -> BTreeSet<(String, String)> {
    let doc: Value = serde_json::from_str(include_str!("../../../docs/openapi.json")).expect("openapi.json is JSON");
    let mut out = BTreeSet::new();
    for (path, ops) in doc["paths"].as_object().expect("paths") {
        for method in ops.as_object().expect("operations").keys() {
            out.insert((method.to_uppercase(), path.clone()));
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openapi_document_lists_every_route_and_nothing_else() -> TestResult {
    let routes: BTreeSet<(String, String)> = floe::server::ROUTES
        .iter()
        .map(|(m, p)| (m.to_string(), p.to_string()))
        .collect();
    assert_eq!(documented(), routes, "docs/openapi.json and server::ROUTES differ");
    // Every route literal in the router's source is listed.
    for line in include_str!("../src/server.rs").lines() {
        if let Some(rest) = line.trim().strip_prefix(".route(\"") {
            let path = rest.split('"').next().unwrap_or("");
            assert!(
                routes.iter().any(|(_, p)| p == path),
                "{path} is routed but not in ROUTES"
            );
        }
    }

    // The router answers each listed (method, path) and refuses the methods not listed.
    let dir = tempfile::tempdir()?;
    let config = Config::from_toml(CONFIG, &dir.path().join("floe.toml"), dir.path())?;
    let node = Node::start(config).await;
    let paths: BTreeSet<&String> = routes.iter().map(|(_, p)| p).collect();
    for path in paths {
        let concrete = path
            .split('/')
            .map(|seg| if seg.starts_with('{') { "x" } else { seg })
            .collect::<Vec<_>>()
            .join("/");
        let listed: BTreeSet<&str> = routes
            .iter()
            .filter(|(_, p)| p == path)
            .map(|(m, _)| m.as_str())
            .collect();
        for method in ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD"] {
            let resp = client()
                .request(
                    reqwest::Method::from_bytes(method.as_bytes())?,
                    format!("{}{concrete}", node.base),
                )
                .send()
                .await?;
            let status = resp.status().as_u16();
            let body = resp.text().await?;
            // A HEAD answer has no body: only its 405 tells "no such route".
            let no_route = status == 405
                || (status == 404 && method != "HEAD" && (body.is_empty() || body.contains("is not a route")));
            if listed.contains(method) {
                assert!(!no_route, "{method} {path} is listed but not routed ({status} {body})");
            } else if !(method == "HEAD" && listed.contains("GET")) {
                assert!(no_route, "{method} {path} is routed ({status}) but not listed");
            }
        }
    }
    node.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_created_at_run_time_count_at_once_are_stored_hashed_and_revoke_at_once() -> TestResult {
    let dir = tempfile::tempdir()?;
    let config = Config::from_toml(CONFIG, &dir.path().join("floe.toml"), dir.path())?;
    let node = Node::start(config.clone()).await;
    let b = node.base.clone();
    let (s, v) = call(
        reqwest::Method::POST,
        format!("{b}/v1/tokens"),
        Some(json!({"scopes": ["reed"]})),
    )
    .await;
    assert_eq!((s, v["error"]["code"].as_str()), (400, Some("invalid_config")), "{v}");
    // No token yet: anyone may make the first one.
    let (s, root) = call(
        reqwest::Method::POST,
        format!("{b}/v1/tokens"),
        Some(json!({"scopes": ["admin"]})),
    )
    .await;
    assert_eq!(s, 201, "{root}");
    let root = root["token"].as_str().expect("the token's text").to_string();
    // From now on the control plane needs it.
    let (s, _) = call(reqwest::Method::GET, format!("{b}/v1/tokens"), None).await;
    assert_eq!(s, 401);
    let sender: Value = client()
        .post(format!("{b}/v1/tokens"))
        .bearer_auth(&root)
        .json(&json!({"scopes": ["send:*"], "description": "web app"}))
        .send()
        .await?
        .json()
        .await?;
    let sender_text = sender["token"].as_str().expect("token").to_string();
    let status = |token: &str, url: String| {
        let token = token.to_string();
        async move {
            client()
                .get(url)
                .bearer_auth(token)
                .send()
                .await
                .expect("GET")
                .status()
                .as_u16()
        }
    };
    assert_eq!(status(&sender_text, format!("{b}/v1/streams")).await, 403);
    assert_eq!(status(&root, format!("{b}/v1/streams")).await, 200);

    // The catalog keeps hashes only; the listing shows no secret.
    let stored = node.app.catalog.tokens().await?;
    assert_eq!(stored.len(), 2);
    let secret = sender_text.rsplit('_').next().expect("secret");
    for t in &stored {
        assert!(!t.secret_sha256.contains(secret) && t.secret_sha256.len() == 64);
    }
    let listing = client()
        .get(format!("{b}/v1/tokens"))
        .bearer_auth(&root)
        .send()
        .await?
        .text()
        .await?;
    assert!(!listing.contains(secret) && listing.contains("web app"), "{listing}");

    // A restart keeps them; a revocation counts at once.
    node.stop().await;
    let node = Node::start(config).await;
    let b = node.base.clone();
    assert_eq!(status(&root, format!("{b}/v1/streams")).await, 200);
    let id = sender["id"].as_str().expect("id");
    let resp = client()
        .delete(format!("{b}/v1/tokens/{id}"))
        .bearer_auth(&root)
        .send()
        .await?;
    assert_eq!(resp.status().as_u16(), 200);
    assert_eq!(status(&sender_text, format!("{b}/v1/tokens")).await, 401);
    let resp = client()
        .delete(format!("{b}/v1/tokens/{id}"))
        .bearer_auth(&root)
        .send()
        .await?;
    assert_eq!(resp.status().as_u16(), 404, "revoked once");
    node.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_created_or_changed_at_run_time_answers_cors_for_its_origins_only() -> TestResult {
    let dir = tempfile::tempdir()?;
    let config = Config::from_toml(CONFIG, &dir.path().join("floe.toml"), dir.path())?;
    let node = Node::start(config).await;
    let b = node.base.clone();
    let allowed = |origin: &'static str| {
        let url = format!("{b}/v1/streams/web/events");
        async move {
            let resp = client()
                .request(reqwest::Method::OPTIONS, url)
                .header("origin", origin)
                .header("access-control-request-method", "POST")
                .send()
                .await
                .expect("preflight");
            resp.headers()
                .get("access-control-allow-origin")
                .map(|v| v.to_str().unwrap_or("").to_string())
        }
    };
    let (s, v) = call(
        reqwest::Method::POST,
        format!("{b}/v1/streams"),
        Some(json!({"name": "web", "http": {"cors_origins": ["https://app.example.com"]}})),
    )
    .await;
    assert_eq!(s, 201, "{v}");
    assert_eq!(
        allowed("https://app.example.com").await.as_deref(),
        Some("https://app.example.com")
    );
    assert_eq!(allowed("https://evil.example").await, None);
    // Changed in place: the new origin counts at once, the old one no more.
    let (s, v) = call(
        reqwest::Method::PATCH,
        format!("{b}/v1/streams/web"),
        Some(json!({"http": {"cors_origins": ["https://new.example.com"]}})),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(
        allowed("https://new.example.com").await.as_deref(),
        Some("https://new.example.com")
    );
    assert_eq!(allowed("https://app.example.com").await, None);
    // A change of the stream's fields is refused and changes nothing.
    let (s, v) = call(
        reqwest::Method::PATCH,
        format!("{b}/v1/streams/web"),
        Some(json!({"fields": [{"name": "id", "type": "int64"}]})),
    )
    .await;
    assert_eq!((s, v["error"]["code"].as_str()), (400, Some("invalid_config")), "{v}");
    let (_, v) = call(reqwest::Method::GET, format!("{b}/v1/streams/web"), None).await;
    assert_eq!(
        (v["version"].as_i64(), v["config"]["fields"].is_null()),
        (Some(2), true),
        "{v}"
    );
    node.stop().await;
    Ok(())
}

/// The scope a route needs when tokens exist (docs/security.md, "With `[[auth.tokens]]`"), or
/// `None` for the routes that are always open.
fn needed_scope(method: &str, path: &str) -> Option<&'static str> {
    match path {
        "/healthz" | "/metrics" => None,
        "/v1/streams/{stream}/events" => Some("send:guarded"),
        "/v1/query" | "/v1/validate_sql" | "/v1/tables/{table}/rows" => Some("read"),
        p if p.starts_with("/iceberg/") && matches!(method, "GET" | "HEAD") => Some("read"),
        p if p.starts_with("/iceberg/") && p.ends_with("/metrics") => Some("read"),
        p if p.starts_with("/iceberg/") => Some("write"),
        _ => Some("admin"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_answers_by_the_token_it_is_given() -> TestResult {
    let dir = tempfile::tempdir()?;
    let toml = format!(
        "{CONFIG}\n[[streams]]\nname = \"guarded\"\nhttp = {{ auth = true }}\n\
         [[auth.tokens]]\ntoken = \"root\"\nscopes = [\"admin\"]\n\
         [[auth.tokens]]\ntoken = \"reader\"\nscopes = [\"read\"]\n\
         [[auth.tokens]]\ntoken = \"writer\"\nscopes = [\"write\"]\n\
         [[auth.tokens]]\ntoken = \"sender\"\nscopes = [\"send:guarded\"]\n"
    );
    let config = Config::from_toml(&toml, &dir.path().join("floe.toml"), dir.path())?;
    let node = Node::start(config).await;
    let b = node.base.clone();
    // A token created at run time and revoked.
    let made: Value = client()
        .post(format!("{b}/v1/tokens"))
        .bearer_auth("root")
        .json(&json!({"scopes": ["admin"]}))
        .send()
        .await?
        .json()
        .await?;
    let revoked = made["token"].as_str().expect("token").to_string();
    let id = made["id"].as_str().expect("id");
    assert_eq!(
        client()
            .delete(format!("{b}/v1/tokens/{id}"))
            .bearer_auth("root")
            .send()
            .await?
            .status()
            .as_u16(),
        200
    );
    let holder = |scope: &str| match scope {
        "read" => "reader",
        "write" => "writer",
        "send:guarded" => "sender",
        _ => "root",
    };
    // A token whose scopes fall short of each need.
    let short = |scope: &str| match scope {
        "read" => "sender",
        "write" => "reader",
        "send:guarded" => "reader",
        _ => "writer",
    };
    for (method, path) in floe::server::ROUTES {
        let concrete = path.replace("{stream}", "guarded");
        let concrete = concrete
            .split('/')
            .map(|seg| if seg.starts_with('{') { "x" } else { seg })
            .collect::<Vec<_>>()
            .join("/");
        let url = format!("{b}{concrete}");
        let send = |token: Option<String>| {
            let url = url.clone();
            let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
            async move {
                let mut req = client().request(method, url);
                if let Some(t) = token {
                    req = req.bearer_auth(t);
                }
                req.send().await.expect("request").status().as_u16()
            }
        };
        let Some(scope) = needed_scope(method, path) else {
            assert_eq!(send(None).await, 200, "{method} {path} is open");
            continue;
        };
        assert_eq!(send(None).await, 401, "{method} {path} without a token");
        assert_eq!(
            send(Some("nope".into())).await,
            401,
            "{method} {path} with an unknown token"
        );
        assert_eq!(
            send(Some(revoked.clone())).await,
            401,
            "{method} {path} with a revoked token"
        );
        assert_eq!(
            send(Some(short(scope).into())).await,
            403,
            "{method} {path} with a token lacking {scope}"
        );
        for token in [holder(scope), "root"] {
            let status = send(Some(token.into())).await;
            assert!(status != 401 && status != 403, "{method} {path} with {token}: {status}");
        }
    }
    node.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn creates_beyond_max_api_objects_are_refused_naming_the_limit() -> TestResult {
    let dir = tempfile::tempdir()?;
    let toml = format!("{CONFIG}\n[limits]\nmax_api_objects = 2\n");
    let config = Config::from_toml(&toml, &dir.path().join("floe.toml"), dir.path())?;
    let node = Node::start(config).await;
    let b = node.base.clone();
    for (name, status) in [("s1", 201), ("s2", 201), ("s3", 409)] {
        let (s, v) = call(
            reqwest::Method::POST,
            format!("{b}/v1/streams"),
            Some(json!({"name": name})),
        )
        .await;
        assert_eq!(s, status, "{v}");
        if status == 409 {
            assert_eq!(v["error"]["limit"], "limits.max_api_objects", "{v}");
        }
    }
    // Each kind counts apart, and a delete makes room.
    let (s, v) = call(
        reqwest::Method::POST,
        format!("{b}/v1/sinks"),
        Some(json!({"name": "k", "type": "iceberg", "table": "a.k"})),
    )
    .await;
    assert_eq!(s, 201, "{v}");
    assert_eq!(
        call(reqwest::Method::DELETE, format!("{b}/v1/streams/s1"), None)
            .await
            .0,
        200
    );
    assert_eq!(
        call(
            reqwest::Method::POST,
            format!("{b}/v1/streams"),
            Some(json!({"name": "s3"}))
        )
        .await
        .0,
        201
    );
    node.stop().await;
    Ok(())
}

/// The pipeline's view, once its state is `want` (or the last view after 30 s).
async fn pipeline_state(base: &str, name: &str, want: &str) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let (_, v) = call(reqwest::Method::GET, format!("{base}/v1/pipelines/{name}"), None).await;
        if v["status"]["state"] == want || tokio::time::Instant::now() >= deadline {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_deleted_and_created_again_with_other_fields_starts_a_log_of_its_own() -> TestResult {
    use reqwest::Method as M;
    let dir = tempfile::tempdir()?;
    let config = Config::from_toml(CONFIG, &dir.path().join("floe.toml"), dir.path())?;
    let node = Node::start(config.clone()).await;
    let b = node.base.clone();
    let create = async |path: &str, body: Value| {
        let (s, v) = call(M::POST, format!("{b}/v1/{path}"), Some(body)).await;
        assert_eq!(s, 201, "{v}");
    };

    // v1: `id` is text; one row of it is dead-lettered (the stream keeps a dead-letter log).
    create(
        "streams",
        json!({"name": "s", "on_invalid": "dead_letter", "fields": [{"name": "id", "type": "string", "required": true}]}),
    )
    .await;
    create(
        "sinks",
        json!({"name": "t", "type": "iceberg", "table": "cp.recreated", "rolling": {"interval_seconds": 1}}),
    )
    .await;
    let sql = "INSERT INTO t SELECT CAST(id AS BIGINT) AS id, 'v1' AS shape FROM s";
    create("pipelines", json!({"name": "p", "sql": sql, "start": "earliest"})).await;
    let body = json!([{"id": "1"}, {"id": "2"}, {"id": 3}]);
    let (s, v) = call(M::POST, format!("{b}/v1/streams/s/events"), Some(body)).await;
    assert_eq!(
        (s, v["accepted"].as_u64(), v["dead_lettered"].as_u64()),
        (200, Some(2), Some(1)),
        "{v}"
    );
    assert_eq!(wait_rows(&node.app, "cp.recreated", 2).await.len(), 2);

    let (s, v) = call(M::DELETE, format!("{b}/v1/streams/s?force=true"), None).await;
    assert_eq!(s, 200, "{v}");
    // Both logs are kept aside, none is left where the stream was.
    let retired: Vec<String> = std::fs::read_dir(config.data_dir().join("deleted-streams"))?
        .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
        .collect::<Result<_, _>>()?;
    assert_eq!(retired.len(), 2, "{retired:?}");
    assert!(retired.iter().any(|r| r.starts_with("s.")) && retired.iter().any(|r| r.starts_with("s_dead_letter.")));
    assert!(!config.stream_dir("s").exists());

    // v2: `id` is a required number. The new stream's log starts at 0 and holds none of v1's
    // text rows, so the pipeline of the same name, created again from the earliest offset, runs.
    create(
        "streams",
        json!({"name": "s", "on_invalid": "dead_letter", "fields": [{"name": "id", "type": "int64", "required": true}]}),
    )
    .await;
    let (s, v) = call(
        M::POST,
        format!("{b}/v1/streams/s/events"),
        Some(json!([{"id": 10}, {"id": 11}])),
    )
    .await;
    assert_eq!((s, v["first_offset"].as_u64()), (200, Some(0)), "{v}");
    let sql = "INSERT INTO t SELECT id, 'v2' AS shape FROM s";
    create("pipelines", json!({"name": "p", "sql": sql, "start": "earliest"})).await;
    let got = wait_rows(&node.app, "cp.recreated", 4).await;
    assert_eq!(
        got,
        [
            (1, "v1".to_string()),
            (2, "v1".into()),
            (10, "v2".into()),
            (11, "v2".into())
        ]
    );
    let v = pipeline_state(&b, "p", "running").await;
    assert_eq!(v["status"]["state"], "running", "{v}");
    assert_eq!(v["status"]["statements"][0]["committed_offset"], 2, "{v}");

    // A log left where a stream was (a stream taken out of floe.toml, a delete that stopped
    // before moving it) is moved aside by the create too.
    let leftover = config.stream_dir("other");
    std::fs::create_dir_all(&leftover)?;
    std::fs::write(leftover.join("stray"), b"not this stream's")?;
    create("streams", json!({"name": "other"})).await;
    assert!(!leftover.join("stray").exists());
    node.stop().await;
    Ok(())
}
