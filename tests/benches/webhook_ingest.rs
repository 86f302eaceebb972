//! Webhook ingestion throughput and latency, each figure next to a baseline measured in the same
//! run; see `coverwatch_tests::ingest_bench` for what is measured and the `BENCH_*` settings.

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let settings = coverwatch_tests::ingest_bench::Settings::from_env();
    coverwatch_tests::ingest_bench::run(&settings, &Default::default()).await;
}
