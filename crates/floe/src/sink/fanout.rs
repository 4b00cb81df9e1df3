//! The sink's fan-out: one open data file writer per partition written to since the last commit,
//! within a memory budget (`rolling.memory_mb`).
//!
//! ```text
//!  write(key, rows) ──► the open writer of `key` (opened on first use: a new data file)
//!                       held += arrow bytes of `rows` (+ the cost of opening, once)
//!  held > budget    ──► close the largest open writers first (ties: the least recently
//!                       written first) until held ≤ ¾ budget; their DataFiles are kept
//!  close()          ──► close the rest: every file of the commit, for one fast-append
//! ```
//!
//! What a writer holds is estimated as the Arrow memory of the rows handed to it since it was
//! opened, plus a fixed cost per open writer (its Parquet column writers, encoders, buffers,
//! bloom filters: `open_cost`). The Arrow bytes are an upper bound of what a Parquet writer
//! buffers for its row group in progress (its encoded, compressed pages are smaller), and the
//! fixed cost is what makes thousands of writers of a few rows each count: with a high-cardinality
//! `partition_by`, they, not the rows, are most of the memory. iceberg's writers report only the
//! encoded size of a file (`current_written_size`), not its memory, so the estimate is floe's.
//!
//! Rows of a partition whose writer was closed open a new writer, and so a new data file, of the
//! same commit: the budget trades memory for more (smaller) files, never for correctness. Every
//! file is still named by the attempt's file name generator (`floe-<pipeline>-<sink>-<attempt>-…`)
//! and lands in the attempt's one commit, so a failed attempt's files are found and removed as
//! before. Going down to ¾ of the budget rather than just under it keeps a stream of new
//! partitions from closing one writer per write.

use std::collections::HashMap;
use std::collections::hash_map::Entry;

use arrow::array::RecordBatch;
use iceberg::spec::{DataFile, PartitionKey, Struct};
use iceberg::writer::{IcebergWriter, IcebergWriterBuilder};

use crate::error::Result;

/// What budget flushes did since the fan-out was made.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FlushStats {
    /// Times the budget was exceeded (each closes one or more writers).
    pub flushes: u64,
    /// Writers closed to get back under the budget.
    pub writers_closed: u64,
    /// Estimated bytes those writers held.
    pub bytes_released: u64,
}

/// Open data file writers by partition, within a memory budget. `T` is what a closed writer
/// yields (Iceberg `DataFile`s).
pub struct Fanout<B, T = DataFile>
where
    B: IcebergWriterBuilder<RecordBatch, Vec<T>>,
{
    builder: B,
    budget: usize,
    open_cost: usize,
    open: HashMap<Struct, Open<B::R>>,
    held: usize,
    files: Vec<T>,
    writes: u64,
    stats: FlushStats,
}

struct Open<W> {
    writer: W,
    /// Estimated bytes this writer holds.
    bytes: usize,
    /// When it was last written to (a counter of writes).
    last: u64,
}

impl<B, T> Fanout<B, T>
where
    B: IcebergWriterBuilder<RecordBatch, Vec<T>>,
    T: Send + 'static,
{
    /// A fan-out building writers with `builder`, holding at most about `budget` bytes; each open
    /// writer counts `open_cost` bytes besides its rows.
    pub fn new(builder: B, budget: usize, open_cost: usize) -> Self {
        Fanout {
            builder,
            budget: budget.max(1),
            open_cost,
            open: HashMap::new(),
            held: 0,
            files: Vec::new(),
            writes: 0,
            stats: FlushStats::default(),
        }
    }

    /// Writes `rows` (all of partition `key`; `None`: an unpartitioned table) to the partition's
    /// open writer, opening one if there is none, then closes the largest writers while the
    /// estimate is over the budget.
    pub async fn write(&mut self, key: Option<PartitionKey>, rows: RecordBatch) -> Result<()> {
        if rows.num_rows() == 0 {
            return Ok(());
        }
        let bytes = rows.get_array_memory_size();
        self.writes += 1;
        let id = key.as_ref().map_or_else(Struct::empty, |k| k.data().clone());
        let open = match self.open.entry(id) {
            Entry::Occupied(e) => e.into_mut(),
            Entry::Vacant(e) => {
                let writer = self.builder.build(key).await?;
                self.held += self.open_cost;
                e.insert(Open {
                    writer,
                    bytes: self.open_cost,
                    last: 0,
                })
            }
        };
        open.writer.write(rows).await?;
        open.bytes += bytes;
        open.last = self.writes;
        self.held += bytes;
        if self.held > self.budget {
            self.release().await?;
        }
        Ok(())
    }

    /// Closes the largest open writers (the least recently written among equals) until the
    /// estimate is at most ¾ of the budget.
    async fn release(&mut self) -> Result<()> {
        let low = self.budget - self.budget / 4;
        let mut by_size: Vec<(usize, u64, Struct)> =
            self.open.iter().map(|(k, o)| (o.bytes, o.last, k.clone())).collect();
        by_size.sort_unstable_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
        let (before, closed_before) = (self.held, self.stats.writers_closed);
        for (_, _, key) in by_size {
            if self.held <= low {
                break;
            }
            let Some(mut open) = self.open.remove(&key) else {
                continue;
            };
            self.held -= open.bytes;
            self.stats.writers_closed += 1;
            self.stats.bytes_released += open.bytes as u64;
            self.files.extend(open.writer.close().await?);
        }
        self.stats.flushes += 1;
        tracing::debug!(
            budget = self.budget,
            held_before = before,
            held = self.held,
            closed = self.stats.writers_closed - closed_before,
            still_open = self.open.len(),
            "sink memory budget exceeded: closed the largest open data files"
        );
        Ok(())
    }

    /// Closes every open writer, keeping their files for [`close`](Self::close) (a run of
    /// sorted rows ends: the next rows go to new files).
    pub async fn close_open(&mut self) -> Result<()> {
        for (_, mut open) in self.open.drain() {
            self.files.extend(open.writer.close().await?);
        }
        self.held = 0;
        Ok(())
    }

    /// Closes every open writer: all files written, those closed for the budget included.
    pub async fn close(mut self) -> Result<Vec<T>> {
        self.close_open().await?;
        Ok(self.files)
    }

    /// The estimated bytes the open writers hold.
    pub fn held(&self) -> usize {
        self.held
    }

    /// How many writers are open.
    pub fn open_writers(&self) -> usize {
        self.open.len()
    }

    /// What budget flushes did so far.
    pub fn stats(&self) -> FlushStats {
        self.stats
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use arrow::array::{Int64Array, StringArray};
    use arrow::datatypes::{DataType, Field, Schema};
    use iceberg::spec::{Literal, NestedField, PartitionSpec, PrimitiveType, Schema as IcebergSchema, Type};

    use super::*;

    /// A "file": the partition value, its rows, and the number of the writer that wrote it.
    #[derive(Debug, Clone, PartialEq)]
    struct FakeFile {
        partition: String,
        rows: usize,
        writer: usize,
    }

    struct FakeBuilder {
        opened: Arc<AtomicUsize>,
    }

    struct FakeWriter {
        partition: String,
        rows: usize,
        writer: usize,
    }

    #[async_trait::async_trait]
    impl IcebergWriterBuilder<RecordBatch, Vec<FakeFile>> for FakeBuilder {
        type R = FakeWriter;

        async fn build(&self, key: Option<PartitionKey>) -> iceberg::Result<FakeWriter> {
            let partition = key.map_or_else(String::new, |k| format!("{:?}", k.data()));
            Ok(FakeWriter {
                partition,
                rows: 0,
                writer: self.opened.fetch_add(1, Ordering::SeqCst),
            })
        }
    }

    #[async_trait::async_trait]
    impl IcebergWriter<RecordBatch, Vec<FakeFile>> for FakeWriter {
        async fn write(&mut self, rows: RecordBatch) -> iceberg::Result<()> {
            self.rows += rows.num_rows();
            Ok(())
        }

        async fn close(&mut self) -> iceberg::Result<Vec<FakeFile>> {
            Ok(vec![FakeFile {
                partition: self.partition.clone(),
                rows: self.rows,
                writer: self.writer,
            }])
        }
    }

    fn key(value: &str) -> PartitionKey {
        let schema = Arc::new(
            IcebergSchema::builder()
                .with_fields(vec![
                    NestedField::required(1, "ns", Type::Primitive(PrimitiveType::String)).into(),
                ])
                .build()
                .unwrap(),
        );
        let spec = PartitionSpec::builder(schema.clone())
            .add_partition_field("ns", "ns", iceberg::spec::Transform::Identity)
            .unwrap()
            .build()
            .unwrap();
        PartitionKey::new(spec, schema, Struct::from_iter([Some(Literal::string(value))]))
    }

    /// `n` rows of a string column and a long column.
    fn rows(n: usize) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![
            Field::new("ns", DataType::Utf8, false),
            Field::new("n", DataType::Int64, false),
        ]));
        RecordBatch::try_new(
            schema,
            vec![
                Arc::new(StringArray::from_iter_values((0..n).map(|i| format!("value-{i}")))),
                Arc::new(Int64Array::from_iter_values(0..n as i64)),
            ],
        )
        .unwrap()
    }

    fn fanout(budget: usize, open_cost: usize) -> (Fanout<FakeBuilder, FakeFile>, Arc<AtomicUsize>) {
        let opened = Arc::new(AtomicUsize::new(0));
        let builder = FakeBuilder { opened: opened.clone() };
        (Fanout::new(builder, budget, open_cost), opened)
    }

    fn partition(value: &str) -> String {
        format!("{:?}", key(value).data())
    }

    #[tokio::test]
    async fn under_the_budget_one_writer_per_partition() {
        let (mut f, opened) = fanout(usize::MAX, 100);
        for round in 0..3 {
            for p in ["a", "b", "c"] {
                let batch = rows(10 + round);
                let bytes = batch.get_array_memory_size();
                let before = f.held();
                f.write(Some(key(p)), batch).await.unwrap();
                let opening = if round == 0 { 100 } else { 0 };
                assert_eq!(
                    f.held(),
                    before + bytes + opening,
                    "held counts Arrow bytes and opening"
                );
            }
        }
        assert_eq!((f.open_writers(), f.stats()), (3, FlushStats::default()));
        let mut files = f.close().await.unwrap();
        files.sort_by(|a, b| a.partition.cmp(&b.partition));
        assert_eq!(files.len(), 3);
        assert!(files.iter().all(|f| f.rows == 10 + 11 + 12));
        assert_eq!(opened.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn the_largest_writer_is_closed_first() {
        let small = rows(10).get_array_memory_size();
        let large = rows(1000).get_array_memory_size();
        // Room for the large one and two small ones, not for a third small one.
        let budget = large + 2 * small + small / 2;
        let (mut f, _) = fanout(budget, 0);
        f.write(Some(key("small-1")), rows(10)).await.unwrap();
        f.write(Some(key("large")), rows(1000)).await.unwrap();
        f.write(Some(key("small-2")), rows(10)).await.unwrap();
        assert_eq!((f.open_writers(), f.stats().flushes), (3, 0));
        f.write(Some(key("small-3")), rows(10)).await.unwrap();
        // Closing the large one alone brings the estimate under ¾ of the budget.
        assert_eq!(f.open_writers(), 3);
        assert_eq!(f.held(), 3 * small);
        assert_eq!(
            f.stats(),
            FlushStats {
                flushes: 1,
                writers_closed: 1,
                bytes_released: large as u64
            }
        );
        let files = f.close().await.unwrap();
        assert_eq!(files.len(), 4);
        // Files closed by the budget come first.
        assert_eq!(files[0].partition, partition("large"));
        assert_eq!(files[0].rows, 1000);
    }

    #[tokio::test]
    async fn among_equals_the_least_recently_written_goes_first_until_three_quarters() {
        let one = rows(1).get_array_memory_size();
        let cost = 1000;
        let each = one + cost;
        // Eight writers fit; the ninth goes over and the total goes down to ≤ 6 writers' worth.
        let budget = 8 * each + each / 2;
        let (mut f, _) = fanout(budget, cost);
        for i in 0..9 {
            f.write(Some(key(&format!("p{i}"))), rows(1)).await.unwrap();
        }
        let stats = f.stats();
        assert_eq!(stats.flushes, 1);
        assert!(f.held() <= budget - budget / 4, "{} > ¾ of {budget}", f.held());
        assert_eq!(f.held(), f.open_writers() * each);
        assert_eq!(stats.writers_closed as usize, 9 - f.open_writers());
        assert_eq!(stats.bytes_released as usize, (9 - f.open_writers()) * each);
        let files = f.close().await.unwrap();
        assert_eq!(files.len(), 9);
        // The first ones written were the ones closed.
        let closed: Vec<String> = files[..stats.writers_closed as usize]
            .iter()
            .map(|f| f.partition.clone())
            .collect();
        let oldest: Vec<String> = (0..stats.writers_closed).map(|i| partition(&format!("p{i}"))).collect();
        assert_eq!(closed, oldest);
    }

    #[tokio::test]
    async fn a_partition_written_after_its_flush_gets_a_new_file() {
        let big = rows(500).get_array_memory_size();
        let (mut f, opened) = fanout(big + big / 2, 0);
        f.write(Some(key("a")), rows(500)).await.unwrap();
        f.write(Some(key("b")), rows(10)).await.unwrap();
        assert_eq!(f.stats().writers_closed, 0);
        // a grows past the budget: it is the largest and is closed.
        f.write(Some(key("a")), rows(500)).await.unwrap();
        assert_eq!(f.stats().writers_closed, 1);
        assert_eq!(f.open_writers(), 1);
        // a again: a second writer, a second file for the same partition, same commit.
        f.write(Some(key("a")), rows(7)).await.unwrap();
        assert_eq!(f.open_writers(), 2);
        let mut files = f.close().await.unwrap();
        files.sort_by_key(|f| f.writer);
        assert_eq!(opened.load(Ordering::SeqCst), 3);
        let a: Vec<usize> = files
            .iter()
            .filter(|x| x.partition == partition("a"))
            .map(|x| x.rows)
            .collect();
        assert_eq!(a, vec![1000, 7]);
        assert_eq!(
            files.iter().map(|x| x.rows).sum::<usize>(),
            1017,
            "every row in exactly one file"
        );
    }

    #[tokio::test]
    async fn unpartitioned_writer_rolls_over_the_budget() {
        let batch = rows(100).get_array_memory_size();
        let (mut f, _) = fanout(2 * batch + batch / 2, 0);
        for _ in 0..6 {
            f.write(None, rows(100)).await.unwrap();
        }
        // Closed at the third batch and at the sixth: two files of 300 rows.
        assert_eq!(f.stats().writers_closed, 2);
        assert_eq!(f.open_writers(), 0);
        assert_eq!(f.held(), 0);
        let files = f.close().await.unwrap();
        assert_eq!(files.iter().map(|x| x.rows).collect::<Vec<_>>(), vec![300, 300]);
    }

    #[tokio::test]
    async fn close_open_ends_every_file_and_keeps_it() {
        let (mut f, opened) = fanout(usize::MAX, 10);
        f.write(Some(key("a")), rows(3)).await.unwrap();
        f.write(Some(key("b")), rows(4)).await.unwrap();
        f.close_open().await.unwrap();
        assert_eq!((f.open_writers(), f.held()), (0, 0));
        f.write(Some(key("a")), rows(5)).await.unwrap();
        f.write(None, RecordBatch::new_empty(rows(0).schema())).await.unwrap();
        let files = f.close().await.unwrap();
        assert_eq!(files.len(), 3);
        assert_eq!(opened.load(Ordering::SeqCst), 3, "an empty batch opens nothing");
        assert_eq!(files.iter().map(|x| x.rows).sum::<usize>(), 12);
    }
}
