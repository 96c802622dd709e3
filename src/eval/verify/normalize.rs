//! String-level LaTeX normalisation (in the spirit of Hendrycks' MATH
//! `strip_string` and latex2sympy2_extended's `normalize_latex`). Every step is a
//! linear pass.

/// Unit words dropped when they trail a number (subset of math-verify's list).
const UNITS: &[&str] = &[
    "square units",
    "square feet",
    "square inches",
    "square meters",
    "square centimeters",
    "sq units",
    "cubic units",
    "cubic feet",
    "cubic inches",
    "cubic meters",
    "cubic centimeters",
    "units",
    "unit",
    "degrees",
    "degree",
    "deg",
    "cm",
    "mm",
    "km",
    "m",
    "meters",
    "meter",
    "metres",
    "feet",
    "foot",
    "ft",
    "inches",
    "inch",
    "in",
    "miles",
    "mile",
    "mph",
    "yards",
    "yard",
    "hours",
    "hour",
    "hrs",
    "hr",
    "minutes",
    "minute",
    "mins",
    "min",
    "seconds",
    "second",
    "sec",
    "days",
    "day",
    "weeks",
    "week",
    "months",
    "month",
    "years",
    "year",
    "dollars",
    "dollar",
    "cents",
    "cent",
    "pounds",
    "pound",
    "lbs",
    "lb",
    "kg",
    "g",
    "grams",
    "gram",
    "liters",
    "liter",
    "litres",
    "ml",
    "gallons",
    "gallon",
    "people",
    "students",
    "ways",
    "points",
    "point",
    "sq",
    "s",
];

fn replace_all(s: &str, pats: &[(&str, &str)]) -> String {
    let mut out = s.to_string();
    for (a, b) in pats {
        if out.contains(a) {
            out = out.replace(a, b);
        }
    }
    out
}

/// One pass over the backslash commands: drop spacing/sizing commands, map
/// aliases (`\\dfrac` -> `\\frac`, `\\mathrm{` -> `\\text{`, `\\leq` -> `\\le` ...).
fn rewrite_commands(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 8);
    let mut rest = s;
    while let Some(p) = rest.find('\\') {
        out.push_str(rest.get(..p).unwrap_or(""));
        let after = rest.get(p + 1..).unwrap_or("");
        let name_len = after.bytes().take_while(|b| b.is_ascii_alphabetic()).count();
        if name_len == 0 {
            let Some(c) = after.chars().next() else {
                out.push('\\');
                rest = "";
                continue;
            };
            let next = after.get(c.len_utf8()..).unwrap_or("");
            match c {
                ',' | ';' | ':' | '$' => {}
                ' ' => out.push(' '),
                // `\!` and the spaces after it (math-verify: `\\!\s*`)
                '!' => {
                    rest = next.trim_start();
                    continue;
                }
                _ => {
                    out.push('\\');
                    out.push(c);
                }
            }
            rest = next;
            continue;
        }
        let name = after.get(..name_len).unwrap_or("");
        let mut tail = after.get(name_len..).unwrap_or("");
        let brace = tail.starts_with('{');
        let repl: Option<&str> = match name {
            "left" | "right" | "bigl" | "bigr" | "big" | "Big" | "Bigl" | "Bigr" | "bigg" | "Bigg" | "middle" => {
                // `\left.` / `\right.`: invisible delimiter
                if let Some(t) = tail.strip_prefix('.') {
                    tail = t;
                }
                Some("")
            }
            "displaystyle" | "textstyle" | "circ" | "degree" | "ldots" | "dots" | "cdots" | "dotsc" | "dotsb"
            | "limits" => Some(""),
            "quad" | "qquad" => Some(" "),
            "dfrac" | "tfrac" | "cfrac" => Some("\\frac"),
            "mathrm" if tail.starts_with("{th}") => {
                tail = tail.get(4..).unwrap_or("");
                Some("")
            }
            "mathrm" | "mathbf" | "mathit" | "mathsf" | "textbf" | "textit" | "textrm" | "textnormal" | "mbox"
            | "operatorname" | "textsf" | "texttt" | "boldsymbol" | "bm"
                if brace =>
            {
                Some("\\text")
            }
            "mathbb" if tail.starts_with("{R}") => {
                tail = tail.get(3..).unwrap_or("");
                Some("(-\\infty,\\infty)")
            }
            "lbrace" => Some("\\{"),
            "rbrace" => Some("\\}"),
            "lvert" | "rvert" | "vert" | "mid" => Some("|"),
            "lt" => Some("<"),
            "gt" => Some(">"),
            "leqslant" | "leq" => Some("\\le "),
            "geqslant" | "geq" => Some("\\ge "),
            "neq" => Some("\\ne "),
            "emptyset" | "varnothing" => Some("\\{\\}"),
            _ => None,
        };
        match repl {
            Some(r) => out.push_str(r),
            None => {
                out.push('\\');
                out.push_str(name);
            }
        }
        rest = tail;
    }
    out.push_str(rest);
    out
}

/// Index of the brace matching `{` at `open` in `b`.
pub(crate) fn matching(b: &[u8], open: usize) -> Option<usize> {
    let mut depth = 0usize;
    let mut i = open;
    while i < b.len() {
        match b.get(i) {
            Some(b'{') => depth += 1,
            Some(b'}') => {
                depth = depth.saturating_sub(1);
                if depth == 0 {
                    return Some(i);
                }
            }
            Some(b'\\') => i += 1,
            _ => {}
        }
        i += 1;
    }
    None
}

/// Replace `\text{...}` (and aliases) by its content; drop a trailing one when it
/// is a unit (something else remains).
fn handle_text(s: &str) -> String {
    let mut s = s.trim().to_string();
    // trailing \text{...} (optionally ^2 / ^3) after other content: a unit
    for _ in 0..2 {
        let t = s.trim_end();
        let t2 = t
            .strip_suffix("^2")
            .or_else(|| t.strip_suffix("^3"))
            .or_else(|| t.strip_suffix("^{2}"))
            .or_else(|| t.strip_suffix("^{3}"))
            .unwrap_or(t);
        if t2.ends_with('}') {
            if let Some(p) = t2.rfind("\\text{") {
                let b = t2.as_bytes();
                if matching(b, p + 5) == Some(t2.len() - 1) {
                    let before = t2.get(..p).unwrap_or("").trim_end();
                    let inner = t2.get(p + 6..t2.len() - 1).unwrap_or("").trim();
                    let inner_l = inner.to_ascii_lowercase();
                    let is_word =
                        !inner_l.is_empty() && inner_l.chars().all(|c| c.is_ascii_alphabetic() || c == ' ' || c == '.');
                    let before_ok = before
                        .chars()
                        .last()
                        .is_some_and(|c| c.is_ascii_digit() || c == '}' || c == ')' || c == '%' || c == '.')
                        || before.ends_with("\\pi");
                    if !before.is_empty() && is_word && before_ok && inner_l != "and" && inner_l != "or" {
                        s = before.to_string();
                        continue;
                    }
                }
            }
        }
        break;
    }
    // unwrap remaining \text{..}
    let mut out = String::with_capacity(s.len());
    let b = s.as_bytes();
    let mut i = 0;
    let mut last = 0;
    while let Some(off) = s.get(i..).and_then(|t| t.find("\\text{")) {
        let p = i + off;
        out.push_str(s.get(last..p).unwrap_or(""));
        match matching(b, p + 5) {
            Some(close) => {
                let inner = s.get(p + 6..close).unwrap_or("");
                let it = inner.trim();
                if it == "and" || it == "or" || it == "," {
                    out.push(',');
                } else {
                    out.push_str(inner);
                }
                i = close + 1;
                last = i;
            }
            None => {
                i = p + 6;
                last = i;
            }
        }
    }
    out.push_str(s.get(last..).unwrap_or(""));
    out
}

fn strip_trailing_units(s: &str) -> String {
    let mut t = s.trim().to_string();
    if !t.ends_with(|c: char| c.is_ascii_alphabetic()) {
        return t;
    }
    for _ in 0..2 {
        let lower = t.to_ascii_lowercase();
        let mut changed = false;
        for u in UNITS {
            if let Some(before) = lower.strip_suffix(u) {
                let bl = before.len();
                let prev = before.chars().last();
                // must follow a digit/brace after optional space, and be a whole word
                let bt = before.trim_end();
                let ok_prev =
                    prev.is_some_and(|c| c == ' ') && bt.chars().last().is_some_and(|c| c.is_ascii_digit() || c == '}');
                let ok_tight = prev.is_some_and(|c| c.is_ascii_digit()) && u.len() > 1;
                if ok_prev || ok_tight {
                    t = t.get(..bl).unwrap_or("").trim_end().to_string();
                    changed = true;
                    break;
                }
            }
        }
        if !changed {
            break;
        }
    }
    t
}

/// Normalise an extracted answer string.
pub(crate) fn normalize(s: &str) -> String {
    let mut s = s.trim().to_string();
    // unwrap math delimiters
    loop {
        let t = s.trim();
        let mut changed = false;
        for (o, c) in [("$$", "$$"), ("\\[", "\\]"), ("\\(", "\\)"), ("$", "$")] {
            if t.len() >= o.len() + c.len() && t.starts_with(o) && t.ends_with(c) {
                s = t.get(o.len()..t.len() - c.len()).unwrap_or("").trim().to_string();
                changed = true;
                break;
            }
        }
        if !changed {
            break;
        }
    }
    if !s.is_ascii() {
        s = replace_all(
            &s,
            &[
                ("\u{2212}", "-"),
                ("\u{2013}", "-"),
                ("\u{00a0}", " "),
                ("\u{221a}", "\\sqrt"),
                ("\u{03c0}", "\\pi "),
                ("\u{00bd}", "\\frac{1}{2}"),
                ("\u{2153}", "\\frac{1}{3}"),
                ("\u{2154}", "\\frac{2}{3}"),
                ("\u{00bc}", "\\frac{1}{4}"),
                ("\u{00be}", "\\frac{3}{4}"),
                ("\u{00d7}", "\\times "),
                ("\u{00f7}", "\\div "),
                ("\u{22c5}", "\\cdot "),
                ("\u{00b7}", "\\cdot "),
                ("\u{2264}", "\\le "),
                ("\u{2265}", "\\ge "),
                ("\u{2260}", "\\ne "),
                ("\u{221e}", "\\infty "),
                ("\u{00b0}", ""),
                ("\u{00b2}", "^2"),
                ("\u{00b3}", "^3"),
            ],
        );
    }
    if s.contains(['\n', '\t']) {
        s = s.replace(['\n', '\t'], " ");
    }
    if s.contains("circ") || s.contains("prime") {
        s = replace_all(&s, &[("^{\\circ}", ""), ("^\\circ", ""), ("^{\\prime}", "'")]);
    }
    if s.contains("{,}") {
        s = s.replace("{,}", "");
    }
    if s.contains('\\') {
        s = rewrite_commands(&s);
    }
    if s.contains('$') {
        s = s.replace('$', "");
    }
    if s.contains("percent") || s.contains("{\\%}") {
        for w in ["\\text{ percent}", "\\text{percent}", "\\text{ percentage}", " percent", "\\text{\\%}"] {
            if s.contains(w) {
                s = s.replace(w, "\\%");
            }
        }
    }
    s = handle_text(&s);
    s = strip_trailing_units(&s);
    let mut t = s.trim().to_string();
    // trailing punctuation
    loop {
        let u = t.trim_end();
        let u2 = u.strip_suffix('.').or_else(|| u.strip_suffix("\\\\")).unwrap_or(u);
        if u2.len() == u.len() {
            break;
        }
        t = u2.trim_end().to_string();
    }
    // `x \in S` -> `S`
    if let Some(pos) = t.find("\\in") {
        let (lhs, rhs) = (t.get(..pos).unwrap_or(""), t.get(pos + 3..).unwrap_or(""));
        let lhs = lhs.trim();
        if !rhs.starts_with(|c: char| c.is_ascii_alphabetic())
            && lhs.len() <= 3
            && lhs.chars().all(|c| c.is_ascii_alphabetic())
        {
            t = rhs.trim().to_string();
        }
    }
    // leading `.5`
    if t.starts_with('.') && t.get(1..2).is_some_and(|c| c.chars().all(|c| c.is_ascii_digit())) {
        t.insert(0, '0');
    }
    // whole-number thousands separators: 1,000,000 / 1\,000 (already removed) / 1 000
    if is_thousands(&t) {
        t = t.replace([',', ' '], "");
    }
    t.trim().to_string()
}

fn is_thousands(t: &str) -> bool {
    let u = t.strip_prefix('-').unwrap_or(t);
    let (int, frac) = match u.split_once('.') {
        Some((a, b)) => (a, Some(b)),
        None => (u, None),
    };
    if let Some(f) = frac {
        if f.is_empty() || !f.bytes().all(|c| c.is_ascii_digit()) {
            return false;
        }
    }
    let sep = if int.contains(',') {
        ','
    } else if int.contains(' ') {
        ' '
    } else {
        return false;
    };
    let groups: Vec<&str> = int.split(sep).collect();
    let Some(first) = groups.first() else { return false };
    if first.is_empty() || first.len() > 3 || !first.bytes().all(|c| c.is_ascii_digit()) {
        return false;
    }
    groups.iter().skip(1).all(|g| g.len() == 3 && g.bytes().all(|c| c.is_ascii_digit()))
}
