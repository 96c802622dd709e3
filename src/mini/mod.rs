//! The embedded mini-scale task: three-digit addition `a+b=` answered by one of two heuristics,
//! the answer in `\boxed{}` and checked by the project's verifier. Everything is generated
//! deterministically from a seed (no global RNG), so every stage of the mini reproduction can
//! be rerun alone and gives the same bytes.
//!
//! Designs (../shared/MINI-SCALE-PROTOTYPE-2.md §2, -3.md):
//!
//! | design | problems | strategies | which is right |
//! |---|---|---|---|
//! | **C** (main) | easy: no column carries; hard: a units carry only | S1 `#\boxed{…}` column-wise (a_i + b_i) mod 10 (90% of SFT data); S2 `$\boxed{…}` the same with +1 on the tens (10%) | S1 iff easy, S2 iff hard: two disjoint heuristics, strategy token first |
//! | **B** (control) | easy: no carries; hard: at least one carry | SHORTCUT `#\boxed{…}` (85%); SLOW: one `x+y+c=t;` step per column, units first, then `\boxed{sum}` (15%) | SHORTCUT iff easy; SLOW always |
//! | **H** (claim b) | C's problems | C's strategies | a hash bit of (a, b): S1's output is the target if it is 0, S2's if 1 — first-order gradient neutral |
//!
//! The SFT data applies a strategy regardless of the problem (wrong demonstrations included, as
//! in web text), so the base model does not condition its strategy on the problem: the paper's
//! regime, where the most likely answer is often wrong and correct answers are rare but reachable.
//!
//! Held-out tiers mirror the paper's benchmarks by difficulty: `math` (easy problems: the common
//! heuristic is right), `amc` (half easy, half hard), `aime` (hard problems: only the rare
//! heuristic, or B's slow chain, is right). Held-out problems never appear in SFT or RL data.

pub mod tokenizer;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use std::collections::HashSet;

/// Which task design.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Design {
    /// Two disjoint heuristics, strategy token first (claim (a)).
    C,
    /// A shortcut plus an always-correct slow chain of thought (the control: every method should help).
    B,
    /// C's heuristics with hash-determined targets (claim (b): only second-order terms act).
    H,
}

impl Design {
    pub fn name(self) -> &'static str {
        match self {
            Design::C => "c",
            Design::B => "b",
            Design::H => "h",
        }
    }
}

/// The kind of a problem (which heuristic is right, for C and B).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    Easy,
    Hard,
}

/// Held-out tiers, named after the paper's benchmarks they stand in for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Tier {
    /// Easy problems (as MATH: the base is mostly right).
    Math,
    /// Half easy, half hard (as AMC23).
    Amc,
    /// Hard problems (as AIME 2025: the base is rarely right at k = 1).
    Aime,
}

impl Tier {
    pub const ALL: [Tier; 3] = [Tier::Math, Tier::Amc, Tier::Aime];
    pub fn name(self) -> &'static str {
        match self {
            Tier::Math => "math",
            Tier::Amc => "amc",
            Tier::Aime => "aime",
        }
    }
    /// Share of easy problems in the tier.
    fn easy_share(self) -> f64 {
        match self {
            Tier::Math => 1.0,
            Tier::Amc => 0.5,
            Tier::Aime => 0.0,
        }
    }
}

/// One problem `a+b=`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct MiniProblem {
    pub a: u32,
    pub b: u32,
}

fn digits(x: u32) -> [u32; 3] {
    [x / 100, (x / 10) % 10, x % 10]
}

/// Knuth's multiplicative hash bit of design H: (((1000a + b) · 2654435761) mod 2³²) >> 31.
pub fn hash_bit(p: MiniProblem) -> u32 {
    ((((1000 * p.a + p.b) as u64 * 2_654_435_761u64) % (1u64 << 32)) >> 31) as u32
}

impl MiniProblem {
    /// The prompt text.
    pub fn prompt(&self) -> String {
        format!("{}+{}=", self.a, self.b)
    }

    pub fn id(&self) -> String {
        format!("{}+{}", self.a, self.b)
    }

    /// Which heuristic is right: by carries for C and B, by the hash bit for H.
    pub fn kind(&self, design: Design) -> Kind {
        let (a, b) = (digits(self.a), digits(self.b));
        match design {
            Design::H => {
                if hash_bit(*self) == 0 {
                    Kind::Easy
                } else {
                    Kind::Hard
                }
            }
            _ => {
                if (0..3).all(|i| a[i] + b[i] < 10) {
                    Kind::Easy
                } else {
                    Kind::Hard
                }
            }
        }
    }

    /// S1 / SHORTCUT's answer: the column-wise sums mod 10 (no carries).
    pub fn s1_answer(&self) -> String {
        let (a, b) = (digits(self.a), digits(self.b));
        let d: String = (0..3).map(|i| char::from_digit((a[i] + b[i]) % 10, 10).unwrap_or('0')).collect();
        let trimmed = d.trim_start_matches('0');
        if trimmed.is_empty() {
            "0".into()
        } else {
            trimmed.to_string()
        }
    }

    /// S2's answer: "always carry one from the units" (right on units-carry-only problems).
    pub fn s2_answer(&self) -> String {
        let (a, b) = (digits(self.a), digits(self.b));
        let d = [(a[0] + b[0]) % 10, (a[1] + b[1] + 1) % 10, (a[2] + b[2]) % 10];
        let s: String = d.iter().map(|&x| char::from_digit(x, 10).unwrap_or('0')).collect();
        let trimmed = s.trim_start_matches('0');
        if trimmed.is_empty() {
            "0".into()
        } else {
            trimmed.to_string()
        }
    }

    /// The gold answer the verifier compares with.
    pub fn gold(&self, design: Design) -> String {
        match design {
            Design::C | Design::B => (self.a + self.b).to_string(),
            Design::H => match self.kind(Design::H) {
                Kind::Easy => self.s1_answer(),
                Kind::Hard => self.s2_answer(),
            },
        }
    }

    /// B's slow chain: one `x+y+c=t;` step per column from the units up, then the true sum.
    pub fn slow_response(&self) -> String {
        let (a, b) = (digits(self.a), digits(self.b));
        let mut out = String::new();
        let mut carry = 0;
        for i in (0..3).rev() {
            let t = a[i] + b[i] + carry;
            out.push_str(&format!("{}+{}+{}={};", a[i], b[i], carry, t));
            carry = t / 10;
        }
        out.push_str(&format!("\\boxed{{{}}}", self.a + self.b));
        out
    }

    /// The response of strategy 1 (the common heuristic) or 2 (the rare one / B's slow chain).
    pub fn response(&self, design: Design, strategy: u8) -> String {
        match (design, strategy) {
            (_, 1) => format!("#\\boxed{{{}}}", self.s1_answer()),
            (Design::B, _) => self.slow_response(),
            _ => format!("$\\boxed{{{}}}", self.s2_answer()),
        }
    }
}

/// Draws an easy problem: no column carries (hundreds digit of a in 1..8).
fn draw_easy(rng: &mut ChaCha8Rng) -> MiniProblem {
    let ah = rng.gen_range(1..=8u32);
    let bh = rng.gen_range(1..=9 - ah);
    let (at, au) = (rng.gen_range(0..=9u32), rng.gen_range(0..=9u32));
    let (bt, bu) = (rng.gen_range(0..=9 - at), rng.gen_range(0..=9 - au));
    let (a, b) = (100 * ah + 10 * at + au, 100 * bh + 10 * bt + bu);
    if rng.gen_bool(0.5) {
        MiniProblem { a: b, b: a }
    } else {
        MiniProblem { a, b }
    }
}

/// Draws a hard problem: C's "units carry only" or B's "at least one carry".
fn draw_hard(design: Design, rng: &mut ChaCha8Rng) -> MiniProblem {
    loop {
        let p = match design {
            Design::B => MiniProblem { a: rng.gen_range(100..=999), b: rng.gen_range(100..=999) },
            _ => MiniProblem { a: rng.gen_range(100..=899), b: rng.gen_range(100..=899) },
        };
        let (a, b) = (digits(p.a), digits(p.b));
        let ok = match design {
            Design::B => (0..3).any(|i| a[i] + b[i] >= 10),
            _ => a[2] + b[2] >= 10 && a[1] + b[1] + 1 < 10 && a[0] + b[0] < 10,
        };
        if ok {
            return p;
        }
    }
}

/// Draws a problem of the design's pool with the given kind. For H the pool is C's (half
/// no-carry, half units-carry) and the kind is the hash bit, so it is drawn by rejection.
fn draw_kind(design: Design, kind: Kind, rng: &mut ChaCha8Rng) -> MiniProblem {
    match design {
        Design::H => loop {
            let p = if rng.gen_bool(0.5) { draw_easy(rng) } else { draw_hard(Design::C, rng) };
            if p.kind(Design::H) == kind {
                return p;
            }
        },
        _ => match kind {
            Kind::Easy => draw_easy(rng),
            Kind::Hard => draw_hard(design, rng),
        },
    }
}

/// The mini task's settings (a `[task]` section with `kind = "mini"`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MiniConfig {
    pub design: Design,
    /// Seeds the held-out tiers, the SFT stream and the RL pool.
    #[serde(default)]
    pub seed: u64,
    /// Problems per held-out tier.
    #[serde(default = "d_eval")]
    pub eval_per_tier: usize,
    /// Share of RL prompts whose right heuristic is the common one (C70: 0.7; H: 0.5).
    #[serde(default = "d_easy")]
    pub rl_easy_share: f64,
    /// RL training prompts (a fixed pool, drawn from with epoch permutations).
    #[serde(default = "d_pool")]
    pub rl_pool: usize,
    /// Share of SFT demonstrations using strategy 2 (C/H: 0.1; B: 0.15).
    #[serde(default)]
    pub sft_s2_share: Option<f64>,
}

fn d_eval() -> usize {
    50
}
fn d_easy() -> f64 {
    0.7
}
fn d_pool() -> usize {
    4096
}

impl MiniConfig {
    pub fn s2_share(&self) -> f64 {
        self.sft_s2_share.unwrap_or(match self.design {
            Design::B => 0.15,
            _ => 0.10,
        })
    }
}

fn rng_for(seed: u64, purpose: &str) -> ChaCha8Rng {
    let tag = purpose.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ b as u64).wrapping_mul(0x0100_0000_01b3));
    ChaCha8Rng::seed_from_u64(seed ^ tag)
}

/// One prompt of a split with its gold answer and kind.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Item {
    pub problem: MiniProblem,
    pub kind: Kind,
    pub gold: String,
}

/// The generated data of a mini task.
#[derive(Debug, Clone)]
pub struct MiniData {
    pub cfg: MiniConfig,
    pub tiers: Vec<(Tier, Vec<Item>)>,
    pub rl_pool: Vec<Item>,
    held_out: HashSet<MiniProblem>,
}

fn item(design: Design, p: MiniProblem) -> Item {
    Item { problem: p, kind: p.kind(design), gold: p.gold(design) }
}

impl MiniData {
    /// Generates the held-out tiers (distinct problems) and the RL pool (held-out problems
    /// excluded), deterministically from `cfg.seed`.
    pub fn generate(cfg: &MiniConfig) -> MiniData {
        let d = cfg.design;
        let mut held_out = HashSet::new();
        let mut tiers = vec![];
        for tier in Tier::ALL {
            let mut rng = rng_for(cfg.seed, &format!("tier-{}", tier.name()));
            let n_easy = (cfg.eval_per_tier as f64 * tier.easy_share()).round() as usize;
            let mut items = vec![];
            for (n, kind) in [(n_easy, Kind::Easy), (cfg.eval_per_tier - n_easy, Kind::Hard)] {
                let mut got = 0;
                while got < n {
                    let p = draw_kind(d, kind, &mut rng);
                    if held_out.insert(p) {
                        items.push(item(d, p));
                        got += 1;
                    }
                }
            }
            tiers.push((tier, items));
        }
        let mut rng = rng_for(cfg.seed, "rl-pool");
        let mut seen = HashSet::new();
        let mut rl_pool = Vec::with_capacity(cfg.rl_pool);
        while rl_pool.len() < cfg.rl_pool {
            let kind = if rng.gen_bool(cfg.rl_easy_share.clamp(0.0, 1.0)) { Kind::Easy } else { Kind::Hard };
            let p = draw_kind(d, kind, &mut rng);
            if !held_out.contains(&p) && seen.insert(p) {
                rl_pool.push(item(d, p));
            }
        }
        MiniData { cfg: cfg.clone(), tiers, rl_pool, held_out }
    }

    /// SFT batch `step` (0-based): `batch` (prompt, demonstration) pairs, half easy and half
    /// hard problems, strategy 2 with probability `s2_share` whatever the problem; held-out
    /// problems never appear.
    pub fn sft_batch(&self, step: u64, batch: usize) -> Vec<(String, String)> {
        let d = self.cfg.design;
        let mut rng = rng_for(self.cfg.seed ^ step.wrapping_mul(0x9E37_79B9_7F4A_7C15), "sft");
        let mut out = Vec::with_capacity(batch);
        while out.len() < batch {
            let kind = if rng.gen_bool(0.5) { Kind::Easy } else { Kind::Hard };
            let p = draw_kind(d, kind, &mut rng);
            if self.held_out.contains(&p) {
                continue;
            }
            let strategy = if rng.gen_bool(self.cfg.s2_share()) { 2 } else { 1 };
            out.push((p.prompt(), p.response(d, strategy)));
        }
        out
    }
}

impl MiniData {
    /// Every held-out tier as problem records (the `sample` stage's `--problems` files):
    /// id `mini-<design>/<tier>/<a>+<b>`, the prompt text, the gold answer, the kind as subject.
    pub fn tier_problems(&self) -> Vec<(Tier, Vec<crate::data::Problem>)> {
        let d = self.cfg.design;
        self.tiers
            .iter()
            .map(|(tier, items)| {
                let probs = items
                    .iter()
                    .map(|it| crate::data::Problem {
                        id: format!("mini-{}/{}/{}", d.name(), tier.name(), it.problem.id()),
                        source: format!("mini-{}-{}", d.name(), tier.name()),
                        problem: it.problem.prompt(),
                        answer: it.gold.clone(),
                        level: None,
                        subject: Some(match it.kind {
                            Kind::Easy => "easy".into(),
                            Kind::Hard => "hard".into(),
                        }),
                        solution: None,
                    })
                    .collect();
                (*tier, probs)
            })
            .collect()
    }

    /// Writes `tier-<name>.jsonl` for every tier into `dir` (durably); returns the paths.
    pub fn write_tiers(&self, dir: &std::path::Path) -> std::io::Result<Vec<std::path::PathBuf>> {
        let mut out = vec![];
        for (tier, probs) in self.tier_problems() {
            let text: String = probs.iter().map(|p| serde_json::to_string(p).expect("serializable") + "\n").collect();
            let path = dir.join(format!("tier-{}.jsonl", tier.name()));
            crate::durable::write(&path, text.as_bytes())?;
            out.push(path);
        }
        Ok(out)
    }
}

/// Which strategy a response took: 1 (`#`), 2 (`$`, or B's slow chain), or 0 (neither).
pub fn strategy_of(design: Design, response: &str) -> u8 {
    match response.chars().next() {
        Some('#') => 1,
        Some('$') if design != Design::B => 2,
        Some(c) if design == Design::B && c.is_ascii_digit() => 2,
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eval::verify::{verify, Mode, Tolerance};

    fn cfg(design: Design) -> MiniConfig {
        MiniConfig { design, seed: 1, eval_per_tier: 50, rl_easy_share: 0.7, rl_pool: 512, sft_s2_share: None }
    }

    #[test]
    fn heuristics_are_right_exactly_where_the_design_says() {
        for design in [Design::C, Design::B, Design::H] {
            let data = MiniData::generate(&cfg(design));
            for (tier, items) in &data.tiers {
                assert_eq!(items.len(), 50);
                for it in items {
                    let p = it.problem;
                    let s1 = verify(&it.gold, &p.response(design, 1), Mode::Strict, Tolerance::MathVerify).correct;
                    let s2 = verify(&it.gold, &p.response(design, 2), Mode::Strict, Tolerance::MathVerify).correct;
                    match (design, it.kind) {
                        (Design::B, Kind::Easy) => assert!(s1 && s2, "{p:?}"),
                        (Design::B, Kind::Hard) => assert!(!s1 && s2, "{p:?}"),
                        (_, Kind::Easy) => assert!(s1 && !s2, "{design:?} {tier:?} {p:?}"),
                        (_, Kind::Hard) => assert!(!s1 && s2, "{design:?} {tier:?} {p:?}"),
                    }
                }
                let easy = items.iter().filter(|i| i.kind == Kind::Easy).count();
                assert_eq!(easy, (50.0 * tier.easy_share()) as usize, "{design:?} {tier:?}");
            }
            // RL pool: the configured mix, no held-out problem.
            let easy = data.rl_pool.iter().filter(|i| i.kind == Kind::Easy).count() as f64 / 512.0;
            assert!((easy - 0.7).abs() < 0.06, "{design:?}: {easy}");
            assert!(data.rl_pool.iter().all(|i| !data.held_out.contains(&i.problem)));
            // SFT: no held-out problem, strategy 2 about 10–15% of the time.
            let batch = data.sft_batch(3, 2000);
            let s2 = batch.iter().filter(|(_, r)| strategy_of(design, r) == 2).count() as f64 / 2000.0;
            assert!((s2 - data.cfg.s2_share()).abs() < 0.03, "{design:?}: {s2}");
            assert_eq!(data.sft_batch(3, 10), data.sft_batch(3, 10), "deterministic");
            assert_ne!(data.sft_batch(3, 10), data.sft_batch(4, 10));
        }
    }

    #[test]
    fn examples_from_the_prototype() {
        let p = MiniProblem { a: 347, b: 258 };
        assert_eq!(p.slow_response(), "7+8+0=15;4+5+1=10;3+2+1=6;\\boxed{605}");
        let q = MiniProblem { a: 123, b: 458 }; // units carry only
        assert_eq!((q.kind(Design::C), q.s1_answer(), q.s2_answer()), (Kind::Hard, "571".into(), "581".into()));
        assert_eq!(q.response(Design::C, 2), "$\\boxed{581}");
        assert_eq!(q.gold(Design::C), "581");
        assert_eq!(strategy_of(Design::B, &q.response(Design::B, 2)), 2);
        assert_eq!(hash_bit(MiniProblem { a: 0, b: 0 }), 0);
    }
}
