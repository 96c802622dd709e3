//! Answer extraction. All scans are linear in the input length.
//!
//! Positions are byte offsets; every offset we slice at is the position of an
//! ASCII byte (or the string end), hence always a char boundary. Slicing goes
//! through `str::get` anyway so that a mistake can never panic.

use super::Mode;

/// Most boxes joined into one answer list.
const MAX_JOINED_BOXES: usize = 64;

fn sub(s: &str, a: usize, b: usize) -> &str {
    s.get(a..b).unwrap_or("")
}

pub(crate) fn extract(response: &str, mode: Mode) -> Option<String> {
    if let Some(b) = last_boxed(response) {
        return Some(b);
    }
    match mode {
        Mode::Strict => None,
        Mode::Lenient => lenient(response),
    }
}

/// Gold answers may come wrapped in `\boxed{}` or `$...$`.
pub(crate) fn unwrap_gold(gold: &str) -> String {
    if let Some(b) = last_boxed(gold) {
        return b;
    }
    let t = gold.trim();
    for (open, close) in [("$$", "$$"), ("\\[", "\\]"), ("\\(", "\\)"), ("$", "$")] {
        if t.len() >= open.len() + close.len() && t.starts_with(open) && t.ends_with(close) {
            let inner = sub(t, open.len(), t.len() - close.len());
            if !inner.contains('$') {
                return inner.trim().to_string();
            }
        }
    }
    t.to_string()
}

/// Find the byte index of the brace matching the `{` at `open`, not looking at or
/// beyond `limit`.
fn match_brace(b: &[u8], open: usize, limit: usize) -> Option<usize> {
    let mut depth: usize = 0;
    let mut i = open;
    let limit = limit.min(b.len());
    while i < limit {
        match b.get(i) {
            Some(b'{') => depth += 1,
            Some(b'}') => {
                depth = depth.saturating_sub(1);
                if depth == 0 {
                    return Some(i);
                }
            }
            Some(b'\\') => {
                // skip escaped braces \{ \}
                if matches!(b.get(i + 1), Some(b'{') | Some(b'}')) {
                    i += 1;
                }
            }
            _ => {}
        }
        i += 1;
    }
    None
}

/// Start offsets of `\boxed` and `\fbox` commands, in order, with command lengths.
fn box_starts(s: &str) -> Vec<(usize, usize)> {
    let b = s.as_bytes();
    let mut v = Vec::new();
    let mut i = 0;
    while let Some(off) = s.get(i..).and_then(|t| t.find('\\')) {
        let p = i + off;
        let rest = &b[p..];
        if rest.starts_with(b"\\boxed") {
            v.push((p, 6));
            i = p + 6;
        } else if rest.starts_with(b"\\fbox") {
            v.push((p, 5));
            i = p + 5;
        } else {
            i = p + 1;
        }
    }
    v
}

fn is_sep_gap(gap: &str) -> bool {
    // math-verify: `\b(and|or)\b|,|;`
    if gap.contains(',') || gap.contains(';') {
        return true;
    }
    let words = gap.split(|c: char| !c.is_ascii_alphanumeric() && c != '_');
    words.into_iter().any(|w| w == "and" || w == "or")
}

/// Content of the last box (see module docs for the joining rule).
pub(crate) fn last_boxed(s: &str) -> Option<String> {
    let starts = box_starts(s);
    let &(last_start, _) = starts.last()?;
    // math-verify: a box inside a math environment (`$..\boxed{..}..$`) is taken
    // together with the boxes of that environment and of environments chained to it
    // by `,` / `and` / `or`.
    let envs = math_envs(s);
    let k = envs.partition_point(|e| e.content_start <= last_start);
    if k > 0 {
        if let Some(e) = envs.get(k - 1) {
            if last_start < e.content_end {
                let has_box = |e: &Env| {
                    let c = sub(s, e.content_start, e.content_end);
                    c.contains("\\boxed") || c.contains("\\fbox")
                };
                let mut first = k - 1;
                while first > 0 && k - first < 6 {
                    let (Some(a), Some(bb)) = (envs.get(first - 1), envs.get(first)) else { break };
                    if a.end <= bb.start && is_chain_gap(sub(s, a.end, bb.start)) && has_box(a) {
                        first -= 1;
                    } else {
                        break;
                    }
                }
                let mut parts: Vec<String> = Vec::new();
                for j in first..k {
                    if let Some(e) = envs.get(j) {
                        let c = sub(s, e.content_start, e.content_end);
                        if let Some(v) = boxes_in(c, &box_starts(c), true) {
                            parts.push(v);
                        }
                    }
                }
                if !parts.is_empty() {
                    return Some(parts.join(","));
                }
            }
        }
    }
    boxes_in(s, &starts, false)
}

/// Join boxes walking back from the last one. `all`: every box (math-verify's
/// `boxed="all"`); otherwise only boxes separated by a short gap.
fn boxes_in(s: &str, starts: &[(usize, usize)], all: bool) -> Option<String> {
    if starts.is_empty() {
        return None;
    }
    let b = s.as_bytes();
    let mut results: Vec<&str> = Vec::new();
    // `limit`: start of the box found after the current one (or text end).
    let mut limit = s.len();
    let mut later_start: Option<usize> = None;
    let mut idx = starts.len();
    while idx > 0 {
        idx -= 1;
        let Some(&(start, clen)) = starts.get(idx) else { break };
        if start >= limit {
            continue; // nested inside a later-found box: already covered
        }
        let mut p = start + clen;
        while p < limit && b.get(p).is_some_and(|c| c.is_ascii_whitespace()) {
            p += 1;
        }
        if p >= limit {
            if results.is_empty() {
                limit = start;
                continue;
            }
            break;
        }
        if b.get(p) == Some(&b'{') {
            let Some(close) = match_brace(b, p, limit) else {
                if results.is_empty() {
                    // unbalanced (e.g. truncated) box: ignore it
                    limit = start;
                    continue;
                }
                break;
            };
            let content = sub(s, p + 1, close).trim();
            if let Some(ls) = later_start {
                let gap = sub(s, close + 1, ls);
                let last = results.last().copied().unwrap_or("");
                let gl = gap.chars().count();
                let ok = all || gl < 10 || (content != last && gl < 70 && is_sep_gap(gap));
                if !ok {
                    break;
                }
            }
            if results.last().copied() != Some(content) {
                results.push(content);
            }
            if results.len() >= MAX_JOINED_BOXES {
                break;
            }
            later_start = Some(start);
            limit = start;
        } else {
            if results.is_empty() {
                // `\boxed 5` form: up to `$`, newline
                let rest = sub(s, p, limit);
                let end = rest.find(['$', '\n']).unwrap_or(rest.len());
                let v = sub(rest, 0, end).trim();
                let v = v.strip_suffix('.').unwrap_or(v).trim();
                if !v.is_empty() {
                    return Some(v.to_string());
                }
                limit = start;
                continue;
            }
            break;
        }
    }
    if results.is_empty() {
        return None;
    }
    results.reverse();
    Some(results.join(","))
}

#[derive(Clone, Debug)]
struct Env {
    start: usize,
    end: usize,
    content_start: usize,
    content_end: usize,
}

/// Math environments `$$..$$`, `$..$`, `\[..\]`, `\(..\)` in one linear scan.
fn math_envs(s: &str) -> Vec<Env> {
    let b = s.as_bytes();
    let n = b.len();
    let mut v = Vec::new();
    let mut i = 0;
    // memo of failed searches: no closing delimiter at or after / before these
    let mut no_bracket_close = usize::MAX;
    let mut no_paren_close_until = 0usize;
    let mut no_dd_close = usize::MAX;
    while i < n {
        let c = b.get(i).copied().unwrap_or(0);
        if c == b'\\' {
            match b.get(i + 1) {
                Some(b'$') => {
                    i += 2;
                    continue;
                }
                Some(&o @ (b'[' | b'(')) => {
                    let failed_before = if o == b'[' { i >= no_bracket_close } else { i < no_paren_close_until };
                    if !failed_before {
                        let close: &[u8] = if o == b'[' { b"\\]" } else { b"\\)" };
                        match find_bytes(b, i + 2, close, o == b'(') {
                            Ok(off) => {
                                v.push(Env { start: i, end: off + 2, content_start: i + 2, content_end: off });
                                i = off + 2;
                                continue;
                            }
                            Err(stop) => {
                                if o == b'[' {
                                    no_bracket_close = i;
                                } else {
                                    no_paren_close_until = stop;
                                }
                            }
                        }
                    }
                    i += 2;
                    continue;
                }
                _ => {
                    if let Some(e) = bare_frac(b, i) {
                        let st = if i > 0 && b.get(i - 1) == Some(&b'-') { i - 1 } else { i };
                        v.push(Env { start: st, end: e, content_start: st, content_end: e });
                        i = e;
                        continue;
                    }
                    i += 2;
                    continue;
                }
            }
        }
        if c == b'$' {
            if b.get(i + 1) == Some(&b'$') {
                if i < no_dd_close {
                    match find_bytes(b, i + 2, b"$$", false) {
                        Ok(off) => {
                            v.push(Env { start: i, end: off + 2, content_start: i + 2, content_end: off });
                            i = off + 2;
                            continue;
                        }
                        Err(_) => no_dd_close = i,
                    }
                }
                i += 2;
                continue;
            }
            // inline: not preceded by a digit, single line
            let prev_digit = i > 0 && b.get(i - 1).is_some_and(|c| c.is_ascii_digit());
            let mut j = i + 1;
            let mut found = None;
            while j < n {
                match b.get(j) {
                    Some(b'\\') => {
                        j += 2;
                        continue;
                    }
                    Some(b'\n') => break,
                    Some(b'$') => {
                        found = Some(j);
                        break;
                    }
                    _ => {}
                }
                j += 1;
            }
            match found {
                Some(e) if e > i + 1 => {
                    if !prev_digit {
                        v.push(Env { start: i, end: e + 1, content_start: i + 1, content_end: e });
                    }
                    i = e + 1;
                }
                Some(e) => i = e + 1,
                None => i = j.max(i + 1),
            }
            continue;
        }
        i += 1;
    }
    v
}

/// `\frac{N}{N}` with simple numbers at `i`; returns the end offset.
fn bare_frac(b: &[u8], i: usize) -> Option<usize> {
    if !b.get(i..)?.starts_with(b"\\frac{") {
        return None;
    }
    let mut j = i + 6;
    for k in 0..2 {
        if k == 1 {
            if b.get(j) != Some(&b'{') {
                return None;
            }
            j += 1;
        }
        if b.get(j) == Some(&b'-') {
            j += 1;
        }
        let d0 = j;
        while b.get(j).is_some_and(|c| c.is_ascii_digit()) {
            j += 1;
        }
        if j == d0 {
            return None;
        }
        if matches!(b.get(j), Some(b'.') | Some(b',')) && b.get(j + 1).is_some_and(|c| c.is_ascii_digit()) {
            j += 1;
            while b.get(j).is_some_and(|c| c.is_ascii_digit()) {
                j += 1;
            }
        }
        if b.get(j) != Some(&b'}') {
            return None;
        }
        j += 1;
    }
    Some(j)
}

/// Offset of `pat` at or after `from`; on failure, the offset where the search
/// stopped (a newline in `single_line` mode, else the end).
fn find_bytes(b: &[u8], from: usize, pat: &[u8], single_line: bool) -> Result<usize, usize> {
    let mut i = from;
    while i + pat.len() <= b.len() {
        if single_line && b.get(i) == Some(&b'\n') {
            return Err(i);
        }
        if b.get(i..i + pat.len()) == Some(pat) {
            return Ok(i);
        }
        i += 1;
    }
    Err(b.len())
}

fn env_text<'a>(s: &'a str, e: &Env) -> &'a str {
    sub(s, e.content_start, e.content_end).trim()
}

fn is_chain_gap(gap: &str) -> bool {
    let g: String = gap.split_whitespace().collect();
    matches!(g.as_str(), "," | "and" | ",and" | "or" | ",or")
}

/// Content of env `k` joined with the envs chained before it (math-verify joins
/// `$1$, $2$ and $3$` into one answer list, at most 6 per match).
fn chained(s: &str, envs: &[Env], k: usize) -> String {
    let mut first = k;
    while first > 0 {
        let (Some(a), Some(b)) = (envs.get(first - 1), envs.get(first)) else { break };
        if a.end <= b.start && is_chain_gap(sub(s, a.end, b.start)) {
            first -= 1;
        } else {
            break;
        }
        if k - first > 64 {
            break;
        }
    }
    let len = k - first + 1;
    let take = (len - 1) % 6 + 1;
    let from = k + 1 - take;
    let parts: Vec<&str> = (from..=k).filter_map(|j| envs.get(j)).map(|e| env_text(s, e)).collect();
    parts.join(",")
}

fn is_expr_char(c: u8) -> bool {
    c.is_ascii_digit() || matches!(c, b'.' | b' ' | b'+' | b'-' | b'*' | b'/' | b'^' | b'(' | b')')
}

/// The last anchored number or simple arithmetic expression ending at or before
/// `before`. Returns (start, end, text).
fn last_number(s: &str, before: usize, lo: usize) -> Option<(usize, usize, String)> {
    let b = s.as_bytes();
    let mut p = before.min(b.len());
    let mut iters = 0usize;
    loop {
        iters += 1;
        if iters > 10_000 {
            return None;
        }
        // last digit before p
        let d = lo + b.get(lo..p)?.iter().rposition(|c| c.is_ascii_digit())?;
        // extend right over the number/expression
        let mut end = d + 1;
        while end < b.len() && b.get(end).is_some_and(|c| c.is_ascii_digit() || *c == b'.') {
            end += 1;
        }
        // extend left
        let mut st = d;
        while st > 0 {
            let c = b.get(st - 1).copied().unwrap_or(0);
            if is_expr_char(c) {
                st -= 1;
            } else if c == b','
                && st >= 2
                && b.get(st - 2).is_some_and(|x| x.is_ascii_digit())
                && b.get(st).is_some_and(|x| x.is_ascii_digit())
            {
                // thousands separator / decimal comma
                st -= 1;
            } else {
                break;
            }
        }
        let raw = sub(s, st, end);
        let lead = raw.len() - raw.trim_start().len();
        let mut st2 = st + lead;
        // must begin with digit, '-', '(' or '.'
        while st2 < end && !b.get(st2).is_some_and(|c| c.is_ascii_digit() || matches!(c, b'-' | b'(' | b'.')) {
            st2 += 1;
        }
        let ws_or_start = |q: usize| q == 0 || b.get(q - 1).is_some_and(|c| c.is_ascii_whitespace() || *c == b'=');
        let anchored = st2 == 0
            || b.get(st2 - 1).is_some_and(|c| c.is_ascii_whitespace() || matches!(c, b'=' | b'*' | b'(' | b','))
            || (b.get(st2 - 1) == Some(&b'$') && ws_or_start(st2 - 1))
            || !b.get(st2 - 1).is_some_and(|c| c.is_ascii());
        if !anchored {
            // e.g. `x2`: skip this run
            p = st2;
            if p == 0 {
                return None;
            }
            continue;
        }
        let mut text = comma_number(sub(s, st2, end).trim());
        // balance parentheses crudely
        let opens = text.matches('(').count();
        let closes = text.matches(')').count();
        if opens != closes {
            text = text.replace(['(', ')'], "");
        }
        text = text.trim_end_matches(['+', '-', '*', '/', '^', ' ', '.']).trim().to_string();
        if text.is_empty() {
            p = st2;
            if p == 0 {
                return None;
            }
            continue;
        }
        // percent suffix
        let rest = sub(s, end, (end + 12).min(s.len()));
        let rest_t = rest.trim_start();
        if rest_t.starts_with('%') || rest_t.starts_with("\\%") || rest_t.to_ascii_lowercase().starts_with("percent") {
            text.push_str("\\%");
        }
        return Some((st2, end, text));
    }
}

/// math-verify's reading of digit runs with commas: `1,234,567` is a thousands
/// separated number, otherwise the first comma is a decimal comma (`0,4` = 0.4)
/// and the rest is ignored.
fn comma_number(t: &str) -> String {
    if !t.contains(',') {
        return t.to_string();
    }
    if t.contains(['+', '*', '/', '^', '(', ')']) {
        return t.rsplit(',').next().unwrap_or(t).trim().to_string();
    }
    let (neg, u) = match t.strip_prefix('-') {
        Some(r) => ("-", r),
        None => ("", t),
    };
    let groups: Vec<&str> = u.split(',').collect();
    let first = groups.first().copied().unwrap_or("");
    let int_ok =
        !first.is_empty() && first.len() <= 3 && first.bytes().all(|c| c.is_ascii_digit()) && !first.starts_with('0');
    let mut n = 0;
    if int_ok {
        for g in groups.iter().skip(1) {
            let digits = g.split('.').next().unwrap_or("");
            if digits.len() == 3 && digits.bytes().all(|c| c.is_ascii_digit()) {
                n += 1;
                if g.contains('.') {
                    break;
                }
            } else {
                break;
            }
        }
    }
    if n > 0 {
        let kept: Vec<&str> = groups.iter().take(n + 1).copied().collect();
        let mut r = kept.concat();
        // a group with a decimal part ends the number
        if let Some(p) = r.find('.') {
            let frac_end =
                r.get(p + 1..).map_or(r.len(), |f| p + 1 + f.bytes().take_while(|c| c.is_ascii_digit()).count());
            r.truncate(frac_end);
        }
        return format!("{neg}{r}");
    }
    match (groups.first(), groups.get(1)) {
        (Some(a), Some(b)) if !a.contains('.') && !b.is_empty() => {
            let b = b.split('.').next().unwrap_or("");
            format!("{neg}{a}.{b}")
        }
        (Some(a), _) => format!("{neg}{a}"),
        _ => t.to_string(),
    }
}

fn find_ci_all(s: &str, pat: &str) -> Vec<usize> {
    // ASCII case-insensitive search; pat is lowercase ASCII
    let b = s.as_bytes();
    let p = pat.as_bytes();
    let mut v = Vec::new();
    if p.is_empty() || b.len() < p.len() {
        return v;
    }
    let mut i = 0;
    while i + p.len() <= b.len() {
        if b.get(i..i + p.len()).is_some_and(|w| w.eq_ignore_ascii_case(p)) {
            v.push(i);
            i += p.len();
        } else {
            i += 1;
        }
    }
    v
}

fn lenient(s: &str) -> Option<String> {
    let envs = math_envs(s);
    // 1. "final answer ... is $X$" / "answer: ... $X$" / "answer ... X"
    let answers = find_ci_all(s, "answer");
    let mut best: Option<(usize, String, u8)> = None; // (end, text, priority)
    for &a in answers.iter().rev().take(200) {
        let after = a + 6;
        let colon = s.as_bytes().get(after) == Some(&b':');
        let prio: u8 = if colon { 1 } else { 2 };
        // first env starting within 50 chars after the keyword
        let window_end = char_offset(s, after, 50);
        let k = envs.partition_point(|e| e.start < after);
        let mut cand: Option<(usize, String)> = None;
        if let Some(e) = envs.get(k) {
            if e.start <= window_end {
                // chain forward
                let mut j = k;
                let mut n = 1;
                while n < 6 {
                    let (Some(x), Some(y)) = (envs.get(j), envs.get(j + 1)) else { break };
                    if x.end <= y.start && is_chain_gap(sub(s, x.end, y.start)) {
                        j += 1;
                        n += 1;
                    } else {
                        break;
                    }
                }
                let parts: Vec<&str> = (k..=j).filter_map(|t| envs.get(t)).map(|e| env_text(s, e)).collect();
                cand = envs.get(j).map(|e| (e.end, parts.join(",")));
            }
        }
        // number candidate: after the last '=' within 100 chars, else first number within 50 chars
        let w100 = char_offset(s, after, 100);
        let seg = sub(s, after, w100);
        let num_start = seg.rfind('=').map(|o| after + o + 1);
        let num = match num_start {
            Some(ns) => first_number_after(s, ns, char_offset(s, ns, 50)),
            None => first_number_after(s, after, window_end),
        };
        let inside_env = |pos: usize| {
            let q = envs.partition_point(|e| e.start <= pos);
            q > 0 && envs.get(q - 1).is_some_and(|e| pos < e.end)
        };
        if let Some((ns, ne, t)) = num {
            if !inside_env(ns) && cand.as_ref().is_none_or(|(ce, _)| ne > *ce) {
                cand = Some((ne, t));
            }
        }
        if let Some((end, t)) = cand {
            let better = match &best {
                None => true,
                Some((be, _, bp)) => prio < *bp || (prio == *bp && end > *be),
            };
            if better {
                best = Some((end, t, prio));
            }
        }
    }
    if let Some((_, t, _)) = best {
        return Some(t);
    }
    // 2. last math env or last number, whichever ends last
    let env_c = envs.len().checked_sub(1).map(|k| (envs.get(k).map_or(0, |e| e.end), chained(s, &envs, k)));
    let num_c = last_number(s, s.len(), 0).map(|(_, e, t)| (e, t));
    match (env_c, num_c) {
        (Some((ee, et)), Some((ne, nt))) => {
            if ne > ee {
                Some(nt)
            } else {
                Some(et)
            }
        }
        (Some((_, et)), None) => Some(et),
        (None, Some((_, nt))) => Some(nt),
        (None, None) => None,
    }
    .filter(|t| !t.is_empty())
}

/// Byte offset `n` chars after `from` (clamped to the end).
fn char_offset(s: &str, from: usize, n: usize) -> usize {
    match s.get(from..) {
        Some(t) => t.char_indices().nth(n).map_or(s.len(), |(o, _)| from + o),
        None => s.len(),
    }
}

fn first_number_after(s: &str, from: usize, to: usize) -> Option<(usize, usize, String)> {
    let b = s.as_bytes();
    let mut i = from;
    while i < to.min(b.len()) {
        if b.get(i).is_some_and(|c| c.is_ascii_digit()) {
            // end of the run
            let mut e = i;
            while e < b.len() && b.get(e).is_some_and(|c| is_expr_char(*c) || *c == b',') {
                e += 1;
            }
            let seg = sub(s, 0, e);
            let seg = seg.trim_end_matches([' ', '.', ',', '(', '+', '-', '*', '/', '^']);
            return last_number(s, seg.len().max(from), from);
        }
        i += 1;
    }
    None
}
