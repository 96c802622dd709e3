//! Equivalence of two normalised, parsed answers.

use super::expr::{approx, exact, parse, symbols, to_f64, Node, RelOp};
use super::normalize::normalize;
use super::Tolerance;
use num_bigint::BigInt;
use num_rational::BigRational;
use num_traits::Zero;

const MAX_DEPTH: usize = 32;
/// Largest collection compared element-wise (quadratic matching).
const MAX_ITEMS: usize = 256;

fn squash(s: &str) -> String {
    s.chars().filter(|c| !c.is_whitespace()).collect()
}

/// A word answer: contains a run of >= 3 ASCII letters not part of a command.
fn is_wordy(s: &str) -> bool {
    let b = s.as_bytes();
    let mut run = 0usize;
    let mut in_cmd = false;
    for &c in b {
        if c == b'\\' {
            in_cmd = true;
            run = 0;
            continue;
        }
        if c.is_ascii_alphabetic() {
            if !in_cmd {
                run += 1;
                if run >= 3 {
                    return true;
                }
            }
        } else {
            in_cmd = false;
            run = 0;
        }
    }
    false
}

fn text_key(s: &str) -> String {
    let mut t: String = s.to_lowercase().chars().filter(|c| !c.is_whitespace()).collect();
    // "(a)" -> "a"
    if t.starts_with('(') && t.ends_with(')') {
        if let Some(inner) = t.get(1..t.len().saturating_sub(1)) {
            if !inner.is_empty() && !inner.contains(['(', ')', ',']) {
                t = inner.to_string();
            }
        }
    }
    t
}

/// Answers longer than this are only compared as normalised strings.
const MAX_ANSWER_BYTES: usize = 16_384;

pub(crate) fn equiv(gold: &str, answer: &str, tol: Tolerance) -> bool {
    if gold.len() > MAX_ANSWER_BYTES || answer.len() > MAX_ANSWER_BYTES {
        let (g, a) = (squash(gold.trim()), squash(answer.trim()));
        return !g.is_empty() && g == a;
    }
    let g = normalize(gold);
    let a = normalize(answer);
    if g.is_empty() || a.is_empty() {
        return false;
    }
    if squash(&g) == squash(&a) {
        return true;
    }
    if is_wordy(&g) || is_wordy(&a) {
        let (kg, ka) = (text_key(&g), text_key(&a));
        if !kg.is_empty() && kg == ka {
            return true;
        }
        // still try to parse (e.g. `\sin x` answers) — words parse as symbol products
    }
    match (parse_last_eq(&g), parse_last_eq(&a)) {
        (Some(gn), Some(an)) => node_eq(&gn, &an, tol, 0),
        _ => {
            let (kg, ka) = (text_key(&g), text_key(&a));
            !kg.is_empty() && kg == ka
        }
    }
}

/// Parse; when that fails on a chain `a = b = c` (no `,`/`;`), parse its last
/// part (math-verify's `get_last_eq`).
fn parse_last_eq(s: &str) -> Option<Node> {
    if let Some(n) = parse(s) {
        return Some(n);
    }
    if s.contains([',', ';']) || s.matches('=').count() < 2 {
        return None;
    }
    let last = s.rsplit('=').next()?;
    parse(last.trim())
}

fn is_equation(n: &Node) -> bool {
    matches!(n, Node::Rel(_, ops) if ops.iter().all(|o| *o == RelOp::Eq))
}

fn only_symbols(n: &Node) -> bool {
    match n {
        Node::Sym(_) => true,
        Node::Mul(v) => v.iter().all(|x| matches!(x, Node::Sym(_))),
        _ => false,
    }
}

fn is_assignment(n: &Node) -> bool {
    match n {
        Node::Rel(sides, ops) => ops.iter().all(|o| *o == RelOp::Eq) && sides.first().is_some_and(only_symbols),
        _ => false,
    }
}

fn last_rhs(n: &Node) -> &Node {
    match n {
        Node::Rel(sides, _) => sides.last().unwrap_or(n),
        _ => n,
    }
}

fn is_collection(n: &Node) -> bool {
    matches!(n, Node::Paren(..) | Node::Set(_) | Node::List(_) | Node::Matrix(_) | Node::Union(_) | Node::Pm(..))
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    Tuple,
    Set,
    Interval(bool, bool),
}

/// Classify a collection like latex2sympy does: `(a,b)` with a < b is an open
/// interval, `[a,b]`, `(a,b]`, `[a,b)` intervals, `\{..\}` and bare lists sets.
fn kind_of(n: &Node) -> Option<(Kind, Vec<&Node>)> {
    match n {
        Node::Set(v) | Node::List(v) => Some((Kind::Set, v.iter().collect())),
        Node::Paren(o, c, v) => {
            if v.len() == 2 {
                if *o == '(' && *c == ')' {
                    let lo = v.first().and_then(value_f64);
                    let hi = v.get(1).and_then(value_f64);
                    if let (Some(a), Some(b)) = (lo, hi) {
                        if a < b {
                            return Some((Kind::Interval(true, true), v.iter().collect()));
                        }
                    }
                    return Some((Kind::Tuple, v.iter().collect()));
                }
                return Some((Kind::Interval(*o == '(', *c == ')'), v.iter().collect()));
            }
            Some((Kind::Tuple, v.iter().collect()))
        }
        _ => None,
    }
}

fn value_f64(n: &Node) -> Option<f64> {
    let v = approx(n, &|_| None, 0)?;
    if v.is_nan() {
        None
    } else {
        Some(v)
    }
}

fn node_eq(g: &Node, p: &Node, tol: Tolerance, depth: usize) -> bool {
    if depth > MAX_DEPTH {
        return false;
    }
    let d = depth + 1;
    // assignments / equations (math-verify's asymmetric unwrapping)
    let (g_eq, p_eq) = (is_equation(g), is_equation(p));
    let (mut g, mut p) = (g, p);
    if p_eq && !g_eq {
        p = last_rhs(p);
    } else if is_assignment(g) && !p_eq {
        g = last_rhs(g);
    }
    match (g, p) {
        (Node::Rel(gs, gops), Node::Rel(ps, pops)) => return rel_eq(gs, gops, ps, pops, tol, d),
        (Node::Rel(gs, gops), _) if is_collection(p) => {
            if let Some(iv) = rel_to_interval(gs, gops) {
                return node_eq(&iv, p, tol, d);
            }
            return false;
        }
        (Node::Rel(..), _) | (_, Node::Rel(..)) => return false,
        _ => {}
    }
    if is_collection(g) || is_collection(p) {
        return coll_eq(g, p, tol, d);
    }
    scalar_eq(g, p, tol)
}

fn rel_to_interval(sides: &[Node], ops: &[RelOp]) -> Option<Node> {
    // x < a, x <= a, a < x < b
    let inf = Node::Inf;
    let ninf = Node::Neg(Box::new(Node::Inf));
    match (sides, ops) {
        ([Node::Sym(_), a], [op]) => {
            let (lo, hi, lo_open, hi_open) = match op {
                RelOp::Lt => (ninf, a.clone(), true, true),
                RelOp::Le => (ninf, a.clone(), true, false),
                RelOp::Gt => (a.clone(), inf, true, true),
                RelOp::Ge => (a.clone(), inf, false, true),
                _ => return None,
            };
            Some(Node::Paren(if lo_open { '(' } else { '[' }, if hi_open { ')' } else { ']' }, vec![lo, hi]))
        }
        ([a, Node::Sym(_), b], [o1, o2]) => {
            let lo_open = match o1 {
                RelOp::Lt => true,
                RelOp::Le => false,
                _ => return None,
            };
            let hi_open = match o2 {
                RelOp::Lt => true,
                RelOp::Le => false,
                _ => return None,
            };
            Some(Node::Paren(
                if lo_open { '(' } else { '[' },
                if hi_open { ')' } else { ']' },
                vec![a.clone(), b.clone()],
            ))
        }
        _ => None,
    }
}

fn diff(a: &Node, b: &Node) -> Node {
    Node::Add(vec![a.clone(), Node::Neg(Box::new(b.clone()))])
}

fn flip(o: RelOp) -> RelOp {
    match o {
        RelOp::Lt => RelOp::Gt,
        RelOp::Gt => RelOp::Lt,
        RelOp::Le => RelOp::Ge,
        RelOp::Ge => RelOp::Le,
        x => x,
    }
}

fn rel_eq(gs: &[Node], gops: &[RelOp], ps: &[Node], pops: &[RelOp], tol: Tolerance, d: usize) -> bool {
    if gops.len() != pops.len() || gs.len() != ps.len() {
        return false;
    }
    if gops.len() > 1 {
        // chains: compare pairwise, in order, or fully reversed
        let fwd = gops.iter().zip(pops).all(|(a, b)| a == b)
            && gs.iter().zip(ps).all(|(a, b)| scalar_or_node_eq(a, b, tol, d));
        if fwd {
            return true;
        }
        let rev = gops.iter().zip(pops.iter().rev()).all(|(a, b)| *a == flip(*b))
            && gs.iter().zip(ps.iter().rev()).all(|(a, b)| scalar_or_node_eq(a, b, tol, d));
        return rev;
    }
    let (Some(go), Some(po)) = (gops.first(), pops.first()) else { return false };
    let (Some(gl), Some(gr), Some(pl), Some(pr)) = (gs.first(), gs.get(1), ps.first(), ps.get(1)) else {
        return false;
    };
    let dg = diff(gl, gr);
    if go == po && scalar_eq(&dg, &diff(pl, pr), tol) {
        return true;
    }
    if *go == flip(*po) && scalar_eq(&dg, &diff(pr, pl), tol) {
        return true;
    }
    if *go == RelOp::Eq && *po == RelOp::Eq {
        // same solution set for proportional equations (2x=10 vs x=5)
        return proportional(&dg, &diff(pl, pr));
    }
    false
}

fn scalar_or_node_eq(a: &Node, b: &Node, tol: Tolerance, d: usize) -> bool {
    node_eq(a, b, tol, d)
}

fn coll_eq(g: &Node, p: &Node, tol: Tolerance, d: usize) -> bool {
    match (g, p) {
        (Node::Matrix(a), Node::Matrix(b)) => {
            return a.len() == b.len()
                && a.iter()
                    .zip(b)
                    .all(|(ra, rb)| ra.len() == rb.len() && ra.iter().zip(rb).all(|(x, y)| node_eq(x, y, tol, d)));
        }
        (Node::Matrix(_), _) | (_, Node::Matrix(_)) => return false,
        (Node::Union(a), Node::Union(b)) => {
            return unordered_eq(&a.iter().collect::<Vec<_>>(), &b.iter().collect::<Vec<_>>(), tol, d)
        }
        (Node::Union(_), _) | (_, Node::Union(_)) => return false,
        _ => {}
    }
    let gp = pm_set(g);
    let pp = pm_set(p);
    let g = gp.as_ref().unwrap_or(g);
    let p = pp.as_ref().unwrap_or(p);
    let single_g;
    let single_p;
    let (gk, gv) = match kind_of(g) {
        Some(x) => x,
        None => {
            single_g = [g];
            (Kind::Set, single_g.to_vec())
        }
    };
    let (pk, pv) = match kind_of(p) {
        Some(x) => x,
        None => {
            single_p = [p];
            (Kind::Set, single_p.to_vec())
        }
    };
    if gv.len() > MAX_ITEMS || pv.len() > MAX_ITEMS {
        return false;
    }
    // sympy's FiniteSet drops duplicates
    let gv = if gk == Kind::Set { dedup(gv, tol, d) } else { gv };
    let pv = if pk == Kind::Set { dedup(pv, tol, d) } else { pv };
    if gv.len() != pv.len() {
        return false;
    }
    match (gk, pk) {
        (Kind::Interval(a, b), Kind::Interval(c, e)) => a == c && b == e && ordered_eq(&gv, &pv, tol, d),
        (Kind::Interval(true, true), Kind::Tuple | Kind::Set)
        | (Kind::Tuple | Kind::Set, Kind::Interval(true, true)) => ordered_eq(&gv, &pv, tol, d),
        (Kind::Interval(..), _) | (_, Kind::Interval(..)) => false,
        (Kind::Set, Kind::Set) => unordered_eq(&gv, &pv, tol, d),
        (Kind::Tuple, Kind::Tuple) | (Kind::Tuple, Kind::Set) => ordered_eq(&gv, &pv, tol, d),
        (Kind::Set, Kind::Tuple) => {
            // sympy orders the gold set by value
            let mut gs = gv.clone();
            let keys: Option<Vec<f64>> = gs.iter().map(|x| value_f64(x)).collect();
            if let Some(k) = keys {
                let mut idx: Vec<usize> = (0..gs.len()).collect();
                idx.sort_by(|&a, &b| {
                    let (x, y) = (k.get(a).copied().unwrap_or(0.0), k.get(b).copied().unwrap_or(0.0));
                    x.partial_cmp(&y).unwrap_or(std::cmp::Ordering::Equal)
                });
                gs = idx.iter().filter_map(|&i| gv.get(i).copied()).collect();
            }
            ordered_eq(&gs, &pv, tol, d)
        }
    }
}

fn dedup(v: Vec<&Node>, tol: Tolerance, d: usize) -> Vec<&Node> {
    let mut out: Vec<&Node> = Vec::with_capacity(v.len());
    for x in v {
        if !out.iter().any(|y| node_eq(y, x, tol, d)) {
            out.push(x);
        }
    }
    out
}

/// `a \pm b` as the set {a+b, a-b}.
fn pm_set(n: &Node) -> Option<Node> {
    match n {
        Node::Pm(a, b) => Some(Node::Set(vec![
            Node::Add(vec![(**a).clone(), (**b).clone()]),
            Node::Add(vec![(**a).clone(), Node::Neg(b.clone())]),
        ])),
        _ => None,
    }
}

fn ordered_eq(a: &[&Node], b: &[&Node], tol: Tolerance, d: usize) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| node_eq(x, y, tol, d))
}

fn unordered_eq(a: &[&Node], b: &[&Node], tol: Tolerance, d: usize) -> bool {
    if a.len() != b.len() || a.len() > MAX_ITEMS {
        return false;
    }
    let mut used = vec![false; b.len()];
    for x in a {
        let mut found = false;
        for (j, y) in b.iter().enumerate() {
            if !used.get(j).copied().unwrap_or(true) && node_eq(x, y, tol, d) {
                if let Some(u) = used.get_mut(j) {
                    *u = true;
                }
                found = true;
                break;
            }
        }
        if !found {
            return false;
        }
    }
    true
}

// ------------------------------------------------------------------ scalars

fn is_float_lit(n: &Node) -> bool {
    match n {
        Node::Num(_, f) => *f,
        Node::Neg(a) | Node::Pct(a) => is_float_lit(a),
        _ => false,
    }
}

/// Integer literal (optionally a percentage).
fn int_lit(n: &Node) -> Option<BigRational> {
    match n {
        Node::Num(v, false) if v.is_integer() => Some(v.clone()),
        Node::Neg(a) => int_lit(a).map(|v| -v),
        Node::Pct(a) => int_lit(a),
        _ => None,
    }
}

fn is_pct(n: &Node) -> bool {
    match n {
        Node::Pct(_) => true,
        Node::Neg(a) => is_pct(a),
        _ => false,
    }
}

fn round6(r: &BigRational) -> BigInt {
    let scaled = r * BigRational::from_integer(BigInt::from(1_000_000));
    scaled.round().to_integer()
}

/// Pseudo-random value of variable `name` at sample point `k` (points 0..5 in
/// [0.5, 2.5], point 5 in [-2.5, -0.5]).
fn sym_value(name: &str, k: usize) -> f64 {
    let mut h: u64 = 1469598103934665603 ^ (k as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    for b in name.bytes() {
        h ^= b as u64;
        h = h.wrapping_mul(1099511628211);
    }
    h ^= h >> 29;
    h = h.wrapping_mul(0xBF58_476D_1CE4_E5B9);
    h ^= h >> 32;
    let u = (h >> 11) as f64 / (1u64 << 53) as f64;
    let v = 0.5 + 2.0 * u;
    if k == 5 {
        -v
    } else {
        v
    }
}

fn close(a: f64, b: f64, rel: f64) -> bool {
    if a == b {
        return true;
    }
    if !a.is_finite() || !b.is_finite() {
        return false;
    }
    let diff = (a - b).abs();
    diff <= rel * a.abs().max(b.abs()) || diff <= 1e-12
}

fn paper_close(a: f64, b: f64) -> bool {
    if a == b {
        return true;
    }
    if !a.is_finite() || !b.is_finite() {
        return false;
    }
    // math.isclose(a, b, rel_tol=1e-4)
    (a - b).abs() <= 1e-4 * a.abs().max(b.abs())
}

fn scalar_eq(g: &Node, p: &Node, tol: Tolerance) -> bool {
    let mut gs = Vec::new();
    let mut ps = Vec::new();
    symbols(g, &mut gs, 0);
    symbols(p, &mut ps, 0);
    gs.sort();
    ps.sort();
    if !gs.is_empty() || !ps.is_empty() {
        // different variables (`x+1` vs `y+1`) differ at the sample points unless
        // the expression does not depend on them (`\sin^2x+\cos^2x` = 1)
        return sampled_eq(g, p, if tol == Tolerance::Paper { 1e-6 } else { 1e-9 });
    }
    // constants
    if let (Some(a), Some(b)) = (int_lit(g), int_lit(p)) {
        if is_pct(g) || is_pct(p) {
            // math-verify compares the raw numbers of integer percentages (50\% = 50)
            if a == b {
                return true;
            }
        }
    }
    let ge = exact(g, 0);
    let pe = exact(p, 0);
    if let (Some(a), Some(b)) = (&ge, &pe) {
        if a == b {
            return true;
        }
    }
    match tol {
        Tolerance::Paper => {
            let (Some(a), Some(b)) = (num_value(g, &ge), num_value(p, &pe)) else { return false };
            if paper_close(a, b) {
                return true;
            }
            // percentage variants of the gold (math_equal include_percentage)
            paper_close(a / 100.0, b) || paper_close(a * 100.0, b)
        }
        Tolerance::MathVerify => {
            let gf = is_float_lit(g);
            let pf = is_float_lit(p);
            if gf || pf {
                // the non-decimal side is an exact integer: exact comparison only
                let int_side = |n: &Node, e: &Option<BigRational>, f: bool| {
                    !f && e.as_ref().is_some_and(|v| v.is_integer()) && !matches!(n, Node::Pct(_))
                };
                if int_side(g, &ge, gf) || int_side(p, &pe, pf) {
                    return false;
                }
                if let (Some(a), Some(b)) = (&ge, &pe) {
                    return round6(a) == round6(b);
                }
                let (Some(a), Some(b)) = (num_value(g, &ge), num_value(p, &pe)) else { return false };
                if !a.is_finite() || !b.is_finite() || a.abs() > 1e12 || b.abs() > 1e12 {
                    return false;
                }
                return (a * 1e6).round() == (b * 1e6).round();
            }
            if ge.is_some() && pe.is_some() {
                return false;
            }
            let (Some(a), Some(b)) = (num_value(g, &ge), num_value(p, &pe)) else { return false };
            close(a, b, 1e-10)
        }
    }
}

fn num_value(n: &Node, e: &Option<BigRational>) -> Option<f64> {
    match e {
        Some(v) => Some(to_f64(v)),
        None => approx(n, &|_| None, 0),
    }
}

fn sampled_eq(g: &Node, p: &Node, rel: f64) -> bool {
    let mut ok_points = 0;
    for k in 0..6 {
        let env = move |s: &str| Some(sym_value(s, k));
        match (approx(g, &env, 0), approx(p, &env, 0)) {
            (Some(a), Some(b)) => {
                if !close(a, b, rel) {
                    return false;
                }
                ok_points += 1;
            }
            (None, None) => {}
            _ => return false,
        }
    }
    ok_points >= 2
}

/// d1 = c * d2 for a non-zero constant c at every sample point.
fn proportional(d1: &Node, d2: &Node) -> bool {
    let mut s1 = Vec::new();
    let mut s2 = Vec::new();
    symbols(d1, &mut s1, 0);
    symbols(d2, &mut s2, 0);
    s1.sort();
    s2.sort();
    if s1 != s2 || s1.is_empty() {
        return false;
    }
    let mut ratio: Option<f64> = None;
    for k in 0..5 {
        let env = move |s: &str| Some(sym_value(s, k));
        let (Some(a), Some(b)) = (approx(d1, &env, 0), approx(d2, &env, 0)) else { return false };
        if b == 0.0 || a == 0.0 || !a.is_finite() || !b.is_finite() {
            return false;
        }
        let r = a / b;
        match ratio {
            None => ratio = Some(r),
            Some(r0) => {
                if !close(r, r0, 1e-9) {
                    return false;
                }
            }
        }
    }
    ratio.is_some_and(|r| !r.is_zero() && r.abs() > 0.0)
}
