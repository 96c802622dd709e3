//! The paper repository's verl-style parquet files (AIME 2025, AMC 2023, MATH train/test).
//!
//! Columns used: `reward_model.ground_truth.question` (the problem as the paper prompts it),
//! `reward_model.ground_truth.target` (the gold answer), and, for MATH, `level` and `type`.

use std::path::Path;

use polars::prelude::*;

use super::{last_boxed, parse_level, DataError, Dataset, Problem};

pub(super) fn load_paper_parquet(dataset: Dataset, path: &Path) -> Result<Vec<Problem>, DataError> {
    let bad = |msg: String| DataError::BadFile { path: path.into(), msg };
    let file = std::fs::File::open(path).map_err(|source| DataError::Io { path: path.into(), source })?;
    let df = ParquetReader::new(file).finish().map_err(|e| bad(format!("not a readable parquet file: {e}")))?;

    let ground_truth = df
        .column("reward_model")
        .and_then(|c| c.struct_())
        .and_then(|s| s.field_by_name("ground_truth"))
        .map_err(|e| bad(format!("missing column reward_model.ground_truth: {e}")))?;
    let gt = ground_truth.struct_().map_err(|e| bad(format!("reward_model.ground_truth is not a struct: {e}")))?;
    let field = |name: &str| -> Result<Series, DataError> {
        gt.field_by_name(name).map_err(|e| bad(format!("missing column reward_model.ground_truth.{name}: {e}")))
    };
    let question = field("question")?;
    let target = field("target")?;
    let question = question.str().map_err(|e| bad(format!("question is not a string column: {e}")))?;
    let target = target.str().map_err(|e| bad(format!("target is not a string column: {e}")))?;
    let is_math = matches!(dataset, Dataset::PaperMathTrain | Dataset::PaperMathTest);
    let opt_str_col = |name: &str| -> Result<Option<StringChunked>, DataError> {
        if !is_math {
            return Ok(None);
        }
        let col = df.column(name).map_err(|e| bad(format!("missing column {name}: {e}")))?;
        Ok(Some(col.str().map_err(|e| bad(format!("{name} is not a string column: {e}")))?.clone()))
    };
    let level = opt_str_col("level")?;
    let subject = opt_str_col("type")?;

    // The paper's MATH parquet has a few rows whose `target` is the empty string (their MATH
    // solutions end in `\boxed{}` or `\boxed{\mbox{four}}`). They are real rows of the paper's
    // data, so they are kept: the answer falls back to the solution's last box, which may itself
    // be empty. A null or missing value is still an error.
    let solution = if is_math {
        Some(field("solution")?.str().map_err(|e| bad(format!("solution is not a string column: {e}")))?.clone())
    } else {
        None
    };
    let mut empty_rows = Vec::new();
    let problems = (0..df.height())
        .map(|i| {
            let row = i + 1;
            let malformed = |what: &str| DataError::Malformed { path: path.into(), row, msg: format!("null {what}") };
            let problem = question.get(i).ok_or_else(|| malformed("reward_model.ground_truth.question"))?;
            if problem.trim().is_empty() {
                return Err(DataError::Malformed { path: path.into(), row, msg: "empty problem statement".into() });
            }
            let mut answer = target.get(i).ok_or_else(|| malformed("reward_model.ground_truth.target"))?.trim();
            if answer.is_empty() {
                answer = solution.as_ref().and_then(|s| s.get(i)).and_then(last_boxed).unwrap_or("").trim();
                if answer.is_empty() {
                    empty_rows.push(row);
                }
            }
            Ok(Problem {
                id: format!("{}/{i}", dataset.name()),
                source: dataset.name().into(),
                problem: problem.to_string(),
                answer: answer.to_string(),
                level: level.as_ref().and_then(|l| l.get(i)).and_then(parse_level),
                subject: subject.as_ref().and_then(|s| s.get(i)).map(str::to_string),
                solution: solution.as_ref().and_then(|s| s.get(i)).map(str::to_string),
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    if !empty_rows.is_empty() {
        tracing::warn!(
            "{}: {} row(s) have no gold answer in the file (rows {:?}); kept with an empty answer, as in the paper's data",
            path.display(),
            empty_rows.len(),
            empty_rows
        );
    }
    Ok(problems)
}
