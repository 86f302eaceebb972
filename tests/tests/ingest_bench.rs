//! The ingest benchmark at a tiny size, so that its code cannot rot: it runs end to end and
//! prints every figure, each with its baseline and the ratios against the targets. (The
//! figures themselves mean nothing at this size; `cargo bench` measures.)

use coverwatch_tests::ingest_bench::{Report, Settings, run};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_ingest_benchmark_runs_and_prints_every_figure() {
    let report = Report::default();
    let settings = Settings {
        deliveries: 60,
        concurrency: 8,
        calls: 60,
        // 500/s would queue ~500 deliveries behind a debug build: seconds of test time.
        rates: vec![40, 60],
        rate_seconds: 1,
        ingest_writers: Some(3),
        batches_in_flight: Some(2),
    };
    run(&settings, &report).await;
    let lines = report.lines.into_inner().unwrap();
    let text = lines.join("\n");
    for figure in [
        "baseline ",
        "insert 1-row ",
        "acknowledged ",
        "processed ",
        "at 40/s   webhook → WatchEvents   p50",
        "at 60/s   webhook → WatchEvents   p50",
        "acknowledged / insert yardstick",
        "processed / insert yardstick",
        "watch p99 at 500/s                 not measured",
        "hello-world        60 calls ",
        "GetPolicy          60 calls ",
        "GetPolicy / hello-world ",
        "MiB resident",
    ] {
        assert!(
            lines.iter().any(|l| l.contains(figure)),
            "no `{figure}` line in:\n{text}"
        );
    }
    let watched = lines
        .iter()
        .filter(|l| l.contains("webhook → WatchEvents"))
        .count();
    assert_eq!(watched, 2, "one latency line per rate:\n{text}");
}
