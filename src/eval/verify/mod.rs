//! Math answer verifier: extraction of the final answer from a model response
//! and equivalence checking against a gold answer.
//!
//! This is a pure-Rust re-implementation of the behaviour of
//! [`math-verify`](https://github.com/huggingface/Math-Verify) 0.9.0 (the grader
//! used by the RLVR paper's evaluation), designed to be thousands of times faster,
//! panic-free and linear-time in the response length.
//!
//! # Extraction ([`extract_answer`])
//!
//! * The answer is the content of the **last** `\boxed{...}` (balanced braces,
//!   nested braces allowed), `\boxed 5` (space form) or `\fbox{...}`.
//!   When several boxes appear, the last one wins; as in math-verify, boxes that
//!   directly precede it and are joined to it by a short separator
//!   (`\boxed{1} and \boxed{2}`, `\boxed{1}, \boxed{2}`) form a single answer list
//!   `1,2`.
//! * [`Mode::Strict`] (for training rewards) accepts boxed answers only.
//! * [`Mode::Lenient`] (the default) falls back, when nothing is boxed, to
//!   "final answer is X" / "answer: X" phrases, then to the last math environment
//!   (`$...$`, `$$...$$`, `\[...\]`, `\(...\)`) or the last number in the text.
//!
//! # Equivalence ([`is_equiv`])
//!
//! Both answers are normalised (`\left`/`\right`, `\dfrac`/`\tfrac`/`\cfrac`,
//! `\frac12`, `\text{...}` units, `^\circ`, `\%`, thousands separators, spacing,
//! `x =` prefixes, trailing periods, `\!`, `\,`, `\displaystyle`, unicode
//! minus/√/π/½) and parsed into an expression tree. Numbers are compared with
//! exact rational arithmetic where possible (`\frac{1}{2}` = `0.5` = `50\%`,
//! `1\frac12` = `\frac32`, `\sqrt{12}` = `2\sqrt3`), expressions with variables by
//! evaluation at several points (`3+2x` = `2x+3`), and structured answers
//! element-wise: tuples (ordered), sets and bare answer lists (unordered),
//! intervals (open/closed matters), matrices, relations (`x \le 5` = `5 \ge x`),
//! text answers (case-insensitive). Base subscripts are dropped like math-verify
//! does (`1011_2` = `1011`).
//!
//! ## Precision rules ([`Tolerance`])
//!
//! * [`Tolerance::MathVerify`] (default): exact equality, except that when one
//!   side is a decimal literal both sides are rounded to 6 decimals — unless the
//!   other side is an exact integer, which must match exactly:
//!   `0.3333333` = `\frac13`, `0.333` ≠ `\frac13`, `7.0000001` ≠ `7`, `7.0` = `7`,
//!   `6.283185` = `2\pi`.
//! * [`Tolerance::Paper`]: the paper's `math_equal`: numbers are equal when their
//!   relative difference is at most `1e-4`, and a percentage-scaled gold also
//!   counts (`gold/100`, `gold*100`): `3.1416` = `\pi`, `7.0000001` = `7`,
//!   `0.5` = `50`.
//!
//! ## Deliberate differences from math-verify
//!
//! `\fbox{}`, unicode (`½`, `√`, `∞`), `\,` thousands separators and trailing
//! periods (`\boxed{5.}`, `$\frac34.$`) are accepted where math-verify fails to
//! parse; math-verify's unit stripping of single trailing letters (`9c` → `9`) and
//! its `2(3)` = 5 parse are not reproduced. Gold answers are taken whole (as if
//! wrapped in `\boxed{}`).
//!
//! # Robustness
//!
//! No function here panics. Work is linear in the input size; exponents,
//! big-integer sizes and nesting depth are capped, and anything beyond the caps
//! falls back to a comparison of the normalised strings.

mod compare;
mod expr;
mod extract;
mod normalize;

/// Which answer-extraction rules to use.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// Only `\boxed{}` / `\fbox{}` answers are extracted (training reward).
    Strict,
    /// Boxed answers, then "the answer is X", the last math environment or the
    /// last number (evaluation).
    #[default]
    Lenient,
}

/// Which numeric precision rule to use when comparing numbers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Tolerance {
    /// math-verify: round to 6 decimals when a decimal literal is involved
    /// (`0.3333333` = `\frac13`, but `7.0000001` ≠ `7`).
    #[default]
    MathVerify,
    /// The paper's `math_equal`: relative difference ≤ 1e-4, percentages
    /// (`7.0000001` = `7`, `3.1416` = `\pi`).
    Paper,
}

/// Result of [`verify`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verdict {
    /// The extracted answer (`None` when nothing could be extracted).
    pub extracted: Option<String>,
    /// Whether the extracted answer is equivalent to the gold answer.
    pub correct: bool,
}

/// Extract the final answer from a model response.
///
/// ```
/// use rlvr_decomp::eval::verify::{extract_answer, Mode};
/// assert_eq!(extract_answer("so $x=\\boxed{\\frac{1}{2}}$.", Mode::Strict).as_deref(), Some("\\frac{1}{2}"));
/// // several boxes: the last one ...
/// assert_eq!(extract_answer("first \\boxed{1} but then we see it is \\boxed{2}", Mode::Strict).as_deref(), Some("2"));
/// // ... together with boxes joined to it by a short separator (math-verify compatible)
/// assert_eq!(extract_answer("\\boxed{1} and \\boxed{2}", Mode::Strict).as_deref(), Some("1,2"));
/// assert_eq!(extract_answer("The answer is 42.", Mode::Strict), None);
/// assert_eq!(extract_answer("The answer is 42.", Mode::Lenient).as_deref(), Some("42"));
/// ```
pub fn extract_answer(response: &str, mode: Mode) -> Option<String> {
    extract::extract(response, mode)
}

/// Whether two already-extracted answers are equivalent (`gold` may still be
/// wrapped in `\boxed{}` or `$...$`).
///
/// ```
/// use rlvr_decomp::eval::verify::{is_equiv, Tolerance};
/// assert!(is_equiv("\\frac{1}{2}", "0.5", Tolerance::MathVerify));
/// assert!(is_equiv("\\frac13", "0.3333333", Tolerance::MathVerify));
/// assert!(!is_equiv("7", "7.0000001", Tolerance::MathVerify));
/// assert!(is_equiv("7", "7.0000001", Tolerance::Paper));
/// assert!(is_equiv("3+2x", "2x+3", Tolerance::MathVerify));
/// assert!(!is_equiv("[1,2)", "[1,2]", Tolerance::MathVerify));
/// ```
pub fn is_equiv(gold: &str, answer: &str, tol: Tolerance) -> bool {
    let gold = extract::unwrap_gold(gold);
    compare::equiv(&gold, answer, tol)
}

/// Extract the answer from `response` and compare it with `gold`.
///
/// ```
/// use rlvr_decomp::eval::verify::{verify, Mode, Tolerance};
/// let v = verify("\\frac{\\sqrt6}{3}", "Thus $\\boxed{\\dfrac{\\sqrt{6}}3}$.", Mode::Strict, Tolerance::MathVerify);
/// assert!(v.correct);
/// assert_eq!(v.extracted.as_deref(), Some("\\dfrac{\\sqrt{6}}3"));
/// ```
pub fn verify(gold: &str, response: &str, mode: Mode, tol: Tolerance) -> Verdict {
    let extracted = extract_answer(response, mode);
    let correct = match &extracted {
        Some(a) => is_equiv(gold, a, tol),
        None => false,
    };
    Verdict { extracted, correct }
}

/// Verifies many (gold, response) pairs on `threads` worker threads (≥ 1), in input order.
/// Used by `rlvr-decomp verify`, and wherever a batch of responses is scored at once.
pub fn verify_batch(pairs: &[(&str, &str)], mode: Mode, tol: Tolerance, threads: usize) -> Vec<Verdict> {
    let threads = threads.clamp(1, 256).min(pairs.len().max(1));
    let check = |(g, r): &(&str, &str)| verify(g, r, mode, tol);
    if threads <= 1 {
        return pairs.iter().map(check).collect();
    }
    let chunk = pairs.len().div_ceil(threads);
    std::thread::scope(|sc| {
        let handles: Vec<_> =
            pairs.chunks(chunk).map(|part| sc.spawn(move || part.iter().map(check).collect::<Vec<_>>())).collect();
        // A worker panic (none is known: the verifier is fuzzed) propagates to the caller.
        handles.into_iter().flat_map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p))).collect()
    })
}
