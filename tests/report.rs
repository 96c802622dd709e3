//! The report stage on a synthetic run folder: Table 1 (csv + md) and every figure (PNG + SVG),
//! byte-identical when regenerated from the same inputs.

use std::path::Path;

fn write(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

fn passk(curve: &[(u64, f64)]) -> serde_json::Value {
    let c: serde_json::Map<String, serde_json::Value> =
        curve.iter().map(|(k, v)| (k.to_string(), serde_json::json!(v))).collect();
    serde_json::json!({"report": {"pass_at_k": c}})
}

#[test]
fn table1_and_figures_from_a_run_folder() {
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path();
    for (m, base) in [("base", 0.1), ("psr", 0.4), ("nsr", 0.2)] {
        for seed in [0u64, 1] {
            let mut ds = serde_json::Map::new();
            for (tier, shift) in [("tier-math", 0.5), ("tier-amc", 0.3), ("tier-aime", 0.0)] {
                let curve: Vec<(u64, f64)> = [1u64, 2, 4, 8, 16, 32, 64, 128, 256]
                    .iter()
                    .enumerate()
                    .map(|(i, &k)| (k, (base + shift + 0.05 * i as f64 + 0.01 * seed as f64).min(1.0)))
                    .collect();
                ds.insert(tier.into(), passk(&curve));
            }
            write(
                &run.join(format!("eval/{m}/seed{seed}/passk.json")),
                &serde_json::json!({"datasets": ds}).to_string(),
            );
            if m != "base" {
                let steps: String = (1..=20)
                    .map(|s| {
                        format!(
                            "{{\"step\":{s},\"correct_ratio\":{},\"fully_solved_ratio\":{}}}\n",
                            0.5 + 0.01 * s as f64,
                            0.3 + 0.01 * s as f64
                        )
                    })
                    .collect();
                write(&run.join(format!("rl/{m}/seed{seed}/metrics.jsonl")), &steps);
                let evals: String = (0..=2)
                    .map(|i| {
                        format!(
                            "{{\"step\":{},\"dataset\":\"math\",\"accuracy\":{},\"entropy\":{}}}\n",
                            10 * i,
                            0.9 + 0.02 * i as f64,
                            0.05 - 0.01 * i as f64
                        )
                    })
                    .collect();
                write(&run.join(format!("rl/{m}/seed{seed}/eval_metrics.jsonl")), &evals);
            }
        }
    }
    let s = rlvr_decomp::report::run(run, None).unwrap();
    let names: Vec<String> = s.files.iter().map(|p| p.file_name().unwrap().to_string_lossy().into_owned()).collect();
    for want in [
        "table1.csv",
        "table1.md",
        "fig2_passk_math.png",
        "fig2_passk_aime.svg",
        "fig4_dynamics.png",
        "fig4_dynamics.svg",
    ] {
        assert!(names.iter().any(|n| n == want), "{want} missing from {names:?}");
    }
    let csv = std::fs::read_to_string(run.join("report/table1.csv")).unwrap();
    assert_eq!(csv.lines().count(), 1 + 3 * 2 * 3 * 9, "every (method, seed, tier, k)");
    assert!(csv.lines().nth(1).unwrap().starts_with("base,0,math,1,"), "sorted: base first, math first: {csv}");
    let md = std::fs::read_to_string(run.join("report/table1.md")).unwrap();
    assert!(md.contains("| PSR |") && md.contains("## aime"), "{md}");
    let bytes = |n: &str| std::fs::read(run.join("report").join(n)).unwrap();
    let (png, svg) = (bytes("fig4_dynamics.png"), bytes("fig2_passk_aime.svg"));
    assert!(png.len() > 10_000 && png.starts_with(b"\x89PNG"));
    rlvr_decomp::report::run(run, Some("fig")).unwrap();
    assert_eq!(bytes("fig4_dynamics.png"), png, "figures are deterministic");
    assert_eq!(bytes("fig2_passk_aime.svg"), svg);
    let e = rlvr_decomp::report::run(&tmp.path().join("nothing"), None).unwrap_err().to_string();
    assert!(e.contains("holds no evaluations"), "{e}");
}

/// A set the paper never evaluated (the real-model profile's word problems): its pass@k figure is
/// our panel alone, not our panel beside empty "paper" panels.
#[test]
fn sets_outside_the_paper_get_our_panel_alone() {
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path();
    let mut ds = serde_json::Map::new();
    ds.insert("mawps".into(), passk(&[(1, 0.02), (2, 0.04), (4, 0.07), (8, 0.13), (16, 0.24), (32, 0.4), (64, 0.62)]));
    ds.insert("tier-aime".into(), passk(&[(1, 0.1), (2, 0.2), (4, 0.3)]));
    write(&run.join("eval/base/seed0/passk.json"), &serde_json::json!({"datasets": ds}).to_string());
    rlvr_decomp::report::run(run, None).unwrap();
    let svg = |t: &str| std::fs::read_to_string(run.join("report").join(format!("fig2_passk_{t}.svg"))).unwrap();
    let (mawps, aime) = (svg("mawps"), svg("aime"));
    assert!(mawps.contains("not in the paper") && !mawps.contains("paper: "), "mawps: our panel alone");
    assert!(aime.contains("paper: ") && aime.contains("ours: "), "aime: the paper's panels beside ours");
}

/// Claims over a synthetic run: a comparison that holds passes (with per-seed numbers), one that
/// does not fails, one whose inputs are missing is not-run, and a fixed value works as a side.
#[test]
fn claims_pass_fail_and_not_run() {
    use rlvr_decomp::report::claims::{self, Role, Status};
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path();
    for (m, p1, p256) in [("base", 0.1, 1.0), ("psr", 0.5, 0.6)] {
        for seed in [0u64, 1] {
            let ds = serde_json::json!({"tier-aime": passk(&[(1, p1 + 0.01 * seed as f64), (256, p256)])});
            write(
                &run.join(format!("eval/{m}/seed{seed}/passk.json")),
                &serde_json::json!({"datasets": ds}).to_string(),
            );
        }
    }
    write(
        &run.join("rl/psr/seed0/metrics.jsonl"),
        &(1..=20)
            .map(|s| format!("{{\"step\":{s},\"correct_ratio\":{}}}\n", if s > 18 { 0.9 } else { 0.5 }))
            .collect::<String>(),
    );
    let file = run.join("claims.toml");
    write(
        &file,
        r#"
[[claim]]
id = "raises"
statement = "PSR raises pass@1"
tiers = ["aime"]
lhs = { metric = "pass-at-k", method = "psr", k = 1 }
op = ">"
rhs = { metric = "pass-at-k", method = "base", k = 1 }

[[claim]]
id = "keeps"
statement = "PSR keeps pass@256"
tiers = ["aime"]
lhs = { metric = "pass-at-k", method = "psr", k = 256 }
op = ">="
rhs = { metric = "pass-at-k", method = "base", k = 256 }
tolerance = 0.02

[[claim]]
id = "exp"
role = "experiment"
statement = "an experiment that has not run"
tiers = ["aime"]
lhs = { metric = "pass-at-k", method = "nsr", k = 1, experiment = "design-h" }
op = ">"
rhs = { value = 0.5 }

[[claim]]
id = "end"
statement = "the last 10% of steps are above 0.8"
lhs = { metric = "final-correct-ratio", method = "psr" }
op = ">"
rhs = { value = 0.8 }
"#,
    );
    let (res, files) = claims::run(run, &file).unwrap();
    let status: Vec<(&str, Status)> = res.iter().map(|r| (r.id.as_str(), r.status)).collect();
    assert_eq!(
        status,
        vec![("raises", Status::Pass), ("keeps", Status::Fail), ("exp", Status::NotRun), ("end", Status::Pass)]
    );
    let c = &res[0].numbers.comparisons[0];
    assert_eq!((c.seeds_holding, c.seeds), (2, 2));
    assert!((c.lhs.mean - 0.505).abs() < 1e-12 && (c.lhs.spread - 0.01).abs() < 1e-12);
    assert_eq!(res[2].role, Role::Experiment);
    let text = claims::render(&res);
    assert!(
        text.contains("FAIL     keeps") && text.contains("NOT-RUN  exp") && text.contains("2 pass, 1 fail, 1 not run"),
        "{text}"
    );
    let json: serde_json::Value = serde_json::from_slice(&std::fs::read(&files[0]).unwrap()).unwrap();
    assert_eq!(json[1]["status"], "fail");
    assert_eq!(json[2]["status"], "not-run");
    // A malformed claims file is a one-line error naming the file.
    write(&file, "[[claim]]\nid = \"x\"\nstatement = \"s\"\ntiers = []\nlhs = { metric = \"pass-at-k\", method = \"psr\" }\nop = \">\"\nrhs = { value = 1 }\n");
    let e = claims::run(run, &file).unwrap_err().to_string();
    assert!(e.contains("claims.toml") && e.contains("`k` goes with metric pass-at-k"), "{e}");
}

/// The shipped claims file parses and every claim is well-formed.
#[test]
fn shipped_claims_file_is_valid() {
    let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("paper/claims.toml");
    let c = rlvr_decomp::report::claims::load_claims(&p).unwrap();
    assert!(c.len() >= 10);
}
