//! `rlvr-decomp verify`: batch answer verification of a JSONL case file.

use anyhow::{bail, Context};
use rlvr_decomp::eval::verify::{verify, verify_batch, Mode, Tolerance};
use std::io::{BufRead, BufWriter, Write};
use std::path::PathBuf;
use std::time::Instant;

#[derive(clap::Args, Debug)]
pub struct VerifyArgs {
    /// JSONL file; each line an object with at least `gold` and `response` strings.
    #[arg(long, conflicts_with_all = ["gold", "response"])]
    pub input: Option<PathBuf>,
    /// Output JSONL (input fields plus `extracted` and `correct`); stdout if omitted.
    #[arg(long, requires = "input")]
    pub output: Option<PathBuf>,
    /// Answer-extraction mode.
    #[arg(long, value_enum, default_value_t = Mode::Lenient)]
    pub mode: Mode,
    /// Numeric tolerance rule.
    #[arg(long, value_enum, default_value_t = Tolerance::MathVerify)]
    pub tolerance: Tolerance,
    /// Write `{"n", "n_correct", "seconds", "cases_per_s"}` here.
    #[arg(long)]
    pub stats_json: Option<PathBuf>,
    /// Worker threads for the verification loop (default: all available cores).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Gold answer (single-pair mode, with --response).
    #[arg(long, requires = "response")]
    pub gold: Option<String>,
    /// Model response (single-pair mode, with --gold).
    #[arg(long, requires = "gold")]
    pub response: Option<String>,
}

pub fn run(args: VerifyArgs) -> anyhow::Result<()> {
    if let (Some(g), Some(r)) = (&args.gold, &args.response) {
        let v = verify(g, r, args.mode, args.tolerance);
        println!("extracted: {}", v.extracted.as_deref().unwrap_or("<none>"));
        println!("correct: {}", v.correct);
        return Ok(());
    }
    let Some(input) = &args.input else {
        bail!("either --input FILE or --gold G --response R is required");
    };
    let file = std::fs::File::open(input).with_context(|| format!("opening {}", input.display()))?;
    let reader = std::io::BufReader::new(file);
    let mut rows: Vec<serde_json::Map<String, serde_json::Value>> = Vec::new();
    for (i, line) in reader.lines().enumerate() {
        let line = line.with_context(|| format!("{}:{}: read error", input.display(), i + 1))?;
        if line.trim().is_empty() {
            continue;
        }
        let v: serde_json::Value =
            serde_json::from_str(&line).with_context(|| format!("{}:{}: malformed JSON", input.display(), i + 1))?;
        let serde_json::Value::Object(obj) = v else {
            bail!("{}:{}: expected a JSON object", input.display(), i + 1);
        };
        for key in ["gold", "response"] {
            if !obj.get(key).is_some_and(|x| x.is_string()) {
                bail!("{}:{}: missing string field `{key}`", input.display(), i + 1);
            }
        }
        rows.push(obj);
    }

    let threads = args
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
        .clamp(1, 256)
        .min(rows.len().max(1));
    let pairs: Vec<(&str, &str)> = rows
        .iter()
        .map(|o| {
            let field = |k: &str| o.get(k).and_then(|x| x.as_str()).unwrap_or("");
            (field("gold"), field("response"))
        })
        .collect();
    let start = Instant::now();
    let verdicts = verify_batch(&pairs, args.mode, args.tolerance, threads);
    drop(pairs);
    let seconds = start.elapsed().as_secs_f64();

    let n = rows.len();
    let n_correct = verdicts.iter().filter(|v| v.correct).count();
    let out: Box<dyn Write> = match &args.output {
        Some(p) => Box::new(std::fs::File::create(p).with_context(|| format!("creating {}", p.display()))?),
        None => Box::new(std::io::stdout().lock()),
    };
    let mut out = BufWriter::new(out);
    for (mut o, v) in rows.into_iter().zip(verdicts) {
        o.insert("extracted".into(), v.extracted.map_or(serde_json::Value::Null, serde_json::Value::String));
        o.insert("correct".into(), serde_json::Value::Bool(v.correct));
        serde_json::to_writer(&mut out, &o)?;
        out.write_all(b"\n")?;
    }
    out.flush()?;
    let cps = if seconds > 0.0 { n as f64 / seconds } else { f64::INFINITY };
    eprintln!("verify: {n} cases, {n_correct} correct, {seconds:.4} s, {cps:.0} cases/s ({threads} threads)");
    if let Some(p) = &args.stats_json {
        let stats = serde_json::json!({
            "n": n, "n_correct": n_correct, "seconds": seconds, "threads": threads,
            "cases_per_s": if cps.is_finite() { cps } else { 0.0 },
        });
        std::fs::write(p, serde_json::to_string_pretty(&stats)?).with_context(|| format!("writing {}", p.display()))?;
    }
    Ok(())
}
