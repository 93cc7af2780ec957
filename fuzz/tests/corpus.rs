//! Replays the committed, minimised fuzz corpus of every target on the stable toolchain (debug build:
//! overflow checks and debug assertions on), so that a change that crashes on a known input fails the test
//! command. A target without a corpus is a failure, not a pass.

use std::path::Path;

#[test]
fn every_corpus_input_runs_clean() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus");
    let mut report = Vec::new();
    for (name, run) in nic_fuzz::TARGETS {
        let dir = root.join(name);
        let mut files: Vec<_> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}: the corpus of target {name} is missing", dir.display()))
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.is_file())
            .collect();
        files.sort();
        assert!(!files.is_empty(), "target {name} has an empty corpus in {}", dir.display());
        let mut bytes = 0;
        for f in &files {
            let data = std::fs::read(f).unwrap();
            bytes += data.len();
            run(&data);
        }
        report.push(format!("{name}: {} inputs, {bytes} bytes", files.len()));
    }
    println!("corpus replayed: {}", report.join("; "));
}
