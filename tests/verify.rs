//! Integration tests for the math answer verifier (`rlvr_decomp::eval::verify`).

use proptest::prelude::*;
use rlvr_decomp::eval::verify::{extract_answer, is_equiv, verify, Mode, Tolerance};
use std::time::{Duration, Instant};

const CASES: &str = include_str!("data/verify_cases.jsonl");

#[test]
fn case_file_verdicts() {
    let mut failures = Vec::new();
    let mut n = 0;
    for (i, line) in CASES.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let v: serde_json::Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("line {}: {e}", i + 1));
        let gold = v["gold"].as_str().expect("gold");
        let response = v["response"].as_str().expect("response");
        let expected = v["expected"].as_bool().expect("expected");
        let got = verify(gold, response, Mode::Lenient, Tolerance::MathVerify);
        n += 1;
        if got.correct != expected {
            failures.push(format!(
                "line {} [{}] gold={gold:?} response={:?} extracted={:?} expected={expected} got={}",
                i + 1,
                v["category"].as_str().unwrap_or(""),
                response.chars().rev().take(120).collect::<String>().chars().rev().collect::<String>(),
                got.extracted,
                got.correct
            ));
        }
    }
    assert!(n >= 300, "case file has only {n} cases");
    assert!(failures.is_empty(), "{} of {n} cases failed:\n{}", failures.len(), failures.join("\n"));
}

#[test]
fn extraction_modes() {
    assert_eq!(extract_answer("so \\boxed{\\frac{1}{2}}.", Mode::Strict).as_deref(), Some("\\frac{1}{2}"));
    assert_eq!(extract_answer("\\boxed{{a}{b}}", Mode::Strict).as_deref(), Some("{a}{b}"));
    assert_eq!(extract_answer("\\boxed 5", Mode::Strict).as_deref(), Some("5"));
    assert_eq!(extract_answer("\\fbox{5}", Mode::Strict).as_deref(), Some("5"));
    // the last box wins when boxes are far apart
    let r = "First \\boxed{1}. Then a long discussion shows that this value was wrong because of a sign slip; finally \\boxed{2}";
    assert_eq!(extract_answer(r, Mode::Strict).as_deref(), Some("2"));
    // boxes close together (< 10 chars, or < 70 chars with `,`/`;`/`and`/`or`)
    // form an answer list (math-verify compatible)
    assert_eq!(extract_answer("\\boxed{1} and \\boxed{2}", Mode::Strict).as_deref(), Some("1,2"));
    assert_eq!(extract_answer("The answer is 42.", Mode::Strict), None);
    assert_eq!(extract_answer("The answer is 42.", Mode::Lenient).as_deref(), Some("42"));
    assert_eq!(extract_answer("so we get $\\frac{3}{4}$", Mode::Lenient).as_deref(), Some("\\frac{3}{4}"));
    assert_eq!(extract_answer("we get 3 apples and 7 pears", Mode::Lenient).as_deref(), Some("7"));
    assert_eq!(extract_answer("nothing here", Mode::Lenient), None);
    assert_eq!(extract_answer("", Mode::Lenient), None);
    // unbalanced last box is ignored
    assert_eq!(extract_answer("\\boxed{3} then \\boxed{4", Mode::Strict).as_deref(), Some("3"));
}

#[test]
fn gold_wrapping() {
    for g in ["\\boxed{\\frac12}", "$\\frac12$", "\\(\\frac12\\)", "\\frac{1}{2}", "$\\boxed{0.5}$"] {
        assert!(verify(g, "\\boxed{0.5}", Mode::Strict, Tolerance::MathVerify).correct, "{g}");
    }
}

#[test]
fn tolerance_rules() {
    let mv = Tolerance::MathVerify;
    let paper = Tolerance::Paper;
    assert!(is_equiv("\\frac13", "0.3333333", mv));
    assert!(!is_equiv("\\frac13", "0.333", mv));
    assert!(!is_equiv("7", "7.0000001", mv));
    assert!(is_equiv("7", "7.0", mv));
    assert!(is_equiv("2\\pi", "6.283185", mv));
    assert!(!is_equiv("\\pi", "3.1416", mv));
    assert!(is_equiv("7", "7.0000001", paper));
    assert!(is_equiv("\\pi", "3.1416", paper));
    assert!(!is_equiv("\\pi", "3.14", paper));
    assert!(is_equiv("50", "0.5", paper));
    assert!(!is_equiv("50", "0.5", mv));
    assert!(is_equiv("\\frac13", "0.3333", paper));
    assert!(!is_equiv("3", "4", paper));
}

#[test]
fn equivalence_examples() {
    let t = Tolerance::MathVerify;
    let yes = [
        ("\\sqrt{12}", "2\\sqrt3"),
        ("3+2x", "2x+3"),
        ("x \\le 5", "5 \\ge x"),
        ("\\{1,2\\}", "\\{2,1\\}"),
        ("(-\\infty, 3]", "(-\\infty,3]"),
        ("\\text{Monday}", "monday"),
        ("1011_2", "1011_2"),
        ("90^\\circ", "90"),
        ("10", "10\\text{ cm}"),
        ("1000", "1,000"),
        ("x=5", "5"),
        ("1\\frac12", "\\frac32"),
        ("50\\%", "\\frac12"),
        ("\\begin{pmatrix}1&2\\\\3&4\\end{pmatrix}", "\\begin{bmatrix}1&2\\\\3&4\\end{bmatrix}"),
        ("−1", "-1"),
        ("\\frac{1}{2}", "½"),
        ("2\\sqrt{2}", "2√2"),
        ("\\pi", "π"),
        ("\\left(\\frac12,3\\right)", "(0.5, 3)"),
    ];
    for (g, a) in yes {
        assert!(is_equiv(g, a, t), "{g} vs {a} should be equal");
    }
    let no = [
        ("(1,2)", "(2,1)"),
        ("[1,2)", "[1,2]"),
        ("x \\le 5", "x < 5"),
        ("2x+3", "2x-3"),
        ("\\sqrt{12}", "3\\sqrt2"),
        ("\\text{Monday}", "Tuesday"),
        ("1011_2", "11"),
        ("x+1", "y+1"),
        ("\\frac{1}{2}", "\\frac{1}{3}"),
        ("5", ""),
        ("", "5"),
    ];
    for (g, a) in no {
        assert!(!is_equiv(g, a, t), "{g} vs {a} should differ");
    }
}

fn bound() -> Duration {
    if cfg!(debug_assertions) {
        Duration::from_millis(500)
    } else {
        Duration::from_millis(10)
    }
}

fn assert_fast(name: &str, gold: &str, response: &str) {
    // warm-up, then the best of 3 runs (robust against scheduler noise)
    let _ = verify(gold, response, Mode::Lenient, Tolerance::MathVerify);
    let mut best = Duration::MAX;
    for _ in 0..3 {
        let t = Instant::now();
        let _ = verify(gold, response, Mode::Lenient, Tolerance::MathVerify);
        let _ = verify(gold, response, Mode::Strict, Tolerance::Paper);
        best = best.min(t.elapsed() / 2);
    }
    assert!(best < bound(), "{name}: {best:?} >= {:?}", bound());
}

#[test]
fn adversarial_inputs_are_fast() {
    let mb: String = "The quick brown fox 123 jumps $x$ over \\frac{1}{2} the lazy dog. ".repeat(16_000);
    assert!(mb.len() >= 1_000_000);
    assert_fast("1MB prose", "5", &mb);
    let mb_boxed = format!("{mb}\\boxed{{5}}");
    assert_fast("1MB + box", "5", &mb_boxed);
    let nested = format!("\\boxed{{{}5{}}}", "{".repeat(10_000), "}".repeat(10_000));
    assert_fast("10k nested braces", "5", &nested);
    let unbalanced = format!("\\boxed{{{}5", "{".repeat(10_000));
    assert_fast("10k unbalanced braces", "5", &unbalanced);
    let boxes: String = (0..1000).map(|i| format!("\\boxed{{{i}}} ")).collect();
    assert_fast("1000 boxes", "999", &boxes);
    let far_boxes: String =
        (0..1000).map(|i| format!("\\boxed{{{i}}} and then some more words here to separate. ")).collect();
    assert_fast("1000 separated boxes", "999", &far_boxes);
    let open_boxes = "\\boxed{".repeat(100_000);
    assert_fast("100k open boxes", "5", &open_boxes);
    let dollars = "$".repeat(1_000_000);
    assert_fast("1M dollars", "5", &dollars);
    let brackets = "\\[ \\( ".repeat(100_000);
    assert_fast("unclosed envs", "5", &brackets);
    let answers = "answer: answer is ".repeat(50_000);
    assert_fast("many answer words", "5", &answers);
    let minus = format!("\\boxed{{{}5}}", "-".repeat(10_000));
    assert_fast("10k unary minus", "5", &minus);
    let parens = format!("\\boxed{{{}5{}}}", "(".repeat(5_000), ")".repeat(5_000));
    assert_fast("5k parens", "5", &parens);
    let fracs = format!("\\boxed{{{}1{}}}", "\\frac{".repeat(2_000), "}{2}".repeat(2_000));
    assert_fast("2k nested fracs", "5", &fracs);
    let digits = "9".repeat(1000);
    assert_fast("1000-digit number", &digits, &format!("\\boxed{{{digits}}}"));
    assert_fast("1000-digit vs other", &digits, &format!("\\boxed{{{digits}8}}"));
    assert_fast("huge exponent", "10^{10^{10}}", "\\boxed{10^{10^{10}}}");
    assert_fast("huge exponent 2", "10^{10^{10}}", "\\boxed{10^{10^{11}}}");
    assert_fast("power tower", "2", "\\boxed{2^{2^{2^{2^{2^{2^{2^{2}}}}}}}}");
    assert_fast("big factorial", "5", "\\boxed{100000!}");
    assert_fast("big binomial", "5", "\\boxed{\\binom{1000000}{500000}}");
    assert_fast(
        "long list",
        "1",
        &format!("\\boxed{{{}}}", (0..3000).map(|i| i.to_string()).collect::<Vec<_>>().join(",")),
    );
}

#[test]
fn pathological_values_are_bounded() {
    let t = Tolerance::MathVerify;
    assert!(is_equiv("10^{10^{10}}", "10^{10^{10}}", t));
    assert!(!is_equiv("10^{10^{10}}", "10^{10^{11}}", t));
    let d = "9".repeat(1000);
    assert!(is_equiv(&d, &d, t));
    assert!(!is_equiv(&d, &format!("{}8", "9".repeat(999)), t));
    assert!(is_equiv("2^{100}", "1267650600228229401496703205376", t));
    assert!(!is_equiv("2^{100}", "1267650600228229401496703205377", t));
    assert!(!is_equiv("1", "\\frac{1}{0}", t));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn never_panics_on_random_text(s in "\\PC{0,200}") {
        let _ = extract_answer(&s, Mode::Lenient);
        let _ = extract_answer(&s, Mode::Strict);
        let _ = verify(&s, &s, Mode::Lenient, Tolerance::MathVerify);
        let _ = is_equiv("5", &s, Tolerance::Paper);
    }

    #[test]
    fn never_panics_on_latex_soup(parts in proptest::collection::vec(prop_oneof![
        Just("\\boxed{"), Just("\\fbox{"), Just("{"), Just("}"), Just("$"), Just("$$"), Just("\\["), Just("\\]"),
        Just("\\("), Just("\\)"), Just("\\frac"), Just("\\sqrt"), Just("["), Just("]"), Just("("), Just(")"),
        Just("^"), Just("_"), Just("-"), Just("+"), Just("\\pm"), Just(","), Just("="), Just("\\le"), Just("<"),
        Just("\\left("), Just("\\right)"), Just("\\text{"), Just("\\%"), Just("%"), Just("1"), Just("0"), Just("9999999999"),
        Just("."), Just("x"), Just("\\pi"), Just("\\infty"), Just("\\cup"), Just("!"), Just("&"), Just("\\\\"),
        Just("\\begin{pmatrix}"), Just("\\end{pmatrix}"), Just(" and "), Just("answer: "), Just("½"), Just("√"),
        Just("−"), Just("\\cdot"), Just("\\binom"), Just("\\log_"), Just("|"), Just("é"), Just("\\"), Just(" "),
    ], 0..60)) {
        let s: String = parts.concat();
        let _ = extract_answer(&s, Mode::Lenient);
        let _ = verify(&s, &s, Mode::Lenient, Tolerance::MathVerify);
        let _ = verify("\\frac{1}{2}", &s, Mode::Lenient, Tolerance::Paper);
        let _ = is_equiv(&s, "x", Tolerance::MathVerify);
    }

    #[test]
    fn equal_to_itself_when_parseable(a in -1000i64..1000, b in 1i64..1000) {
        let g = format!("\\frac{{{a}}}{{{b}}}");
        prop_assert!(is_equiv(&g, &g, Tolerance::MathVerify));
        let slash = format!("{}/{}", a, b);
        prop_assert!(is_equiv(&g, &slash, Tolerance::MathVerify));
    }
}
