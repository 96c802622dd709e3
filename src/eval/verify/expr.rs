//! Tokenizer, recursive-descent LaTeX parser and (exact / approximate)
//! evaluation. Depth, number sizes and exponents are capped so that every
//! operation is bounded.

use num_bigint::{BigInt, Sign};
use num_rational::BigRational;
use num_traits::{One, Signed, ToPrimitive, Zero};

/// Maximum nesting depth of the parser.
const MAX_DEPTH: usize = 200;
/// Maximum number of tokens parsed.
const MAX_TOKENS: usize = 4096;
/// Maximum digits of a numeric literal.
const MAX_DIGITS: usize = 2000;
/// Maximum bits of any exact intermediate result.
const MAX_BITS: u64 = 16_384;

#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Tok {
    Num(String),
    Letter(char),
    Cmd(String),
    Ch(char),
}

pub(crate) fn tokenize(s: &str) -> Option<Vec<Tok>> {
    let mut v = Vec::new();
    let mut it = s.char_indices().peekable();
    while let Some((_, c)) = it.next() {
        if v.len() > MAX_TOKENS {
            return None;
        }
        if c.is_whitespace() {
            continue;
        }
        if c.is_ascii_digit() || (c == '.' && it.peek().is_some_and(|(_, d)| d.is_ascii_digit())) {
            let mut n = String::new();
            n.push(c);
            let mut seen_dot = c == '.';
            while let Some(&(_, d)) = it.peek() {
                if d.is_ascii_digit() {
                    n.push(d);
                    it.next();
                } else if d == '.' && !seen_dot {
                    // only a decimal point if followed by a digit
                    let mut look = it.clone();
                    look.next();
                    if look.peek().is_some_and(|(_, e)| e.is_ascii_digit()) {
                        seen_dot = true;
                        n.push(d);
                        it.next();
                    } else {
                        break;
                    }
                } else {
                    break;
                }
                if n.len() > MAX_DIGITS {
                    return None;
                }
            }
            v.push(Tok::Num(n));
            continue;
        }
        if c == '\\' {
            let mut name = String::new();
            while let Some(&(_, d)) = it.peek() {
                if d.is_ascii_alphabetic() {
                    name.push(d);
                    it.next();
                    if name.len() > 32 {
                        return None;
                    }
                } else {
                    break;
                }
            }
            if name.is_empty() {
                match it.next() {
                    Some((_, d)) => name.push(d),
                    None => continue,
                }
            }
            v.push(Tok::Cmd(name));
            continue;
        }
        if c.is_ascii_alphabetic() {
            v.push(Tok::Letter(c.to_ascii_lowercase()));
            continue;
        }
        if "+-*/^_()[]{},;=<>!|&%'".contains(c) {
            v.push(Tok::Ch(c));
            continue;
        }
        if c == ':' {
            // ratio a:b
            v.push(Tok::Ch('/'));
            continue;
        }
        if c == '?' || c == '"' {
            return None;
        }
        // other unicode letters: treat as symbols
        if c.is_alphabetic() {
            v.push(Tok::Letter(c));
            continue;
        }
        return None;
    }
    Some(v)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum RelOp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

#[derive(Clone, Debug)]
pub(crate) enum Node {
    /// value, written as a decimal literal
    Num(BigRational, bool),
    Sym(String),
    Pi,
    E,
    Inf,
    Add(Vec<Node>),
    Mul(Vec<Node>),
    Neg(Box<Node>),
    Div(Box<Node>, Box<Node>),
    Pow(Box<Node>, Box<Node>),
    /// radicand, index
    Root(Box<Node>, Box<Node>),
    Func(String, Box<Node>),
    Log(Box<Node>, Box<Node>),
    Fact(Box<Node>),
    Binom(Box<Node>, Box<Node>),
    Abs(Box<Node>),
    Pct(Box<Node>),
    /// open delimiter, close delimiter, items (len >= 2, or a 1-tuple written with a comma)
    Paren(char, char, Vec<Node>),
    Set(Vec<Node>),
    /// bare comma-separated list at top level
    List(Vec<Node>),
    Matrix(Vec<Vec<Node>>),
    Rel(Vec<Node>, Vec<RelOp>),
    Union(Vec<Node>),
    /// pm: a ± b  → set {a+b, a-b}
    Pm(Box<Node>, Box<Node>),
}

struct P {
    t: Vec<Tok>,
    i: usize,
    depth: usize,
}

const FUNCS: &[&str] = &[
    "sin", "cos", "tan", "cot", "sec", "csc", "arcsin", "arccos", "arctan", "sinh", "cosh", "tanh", "exp", "ln", "log",
    "lg",
];
const GREEK: &[&str] = &[
    "alpha",
    "beta",
    "gamma",
    "delta",
    "epsilon",
    "varepsilon",
    "zeta",
    "eta",
    "theta",
    "vartheta",
    "iota",
    "kappa",
    "lambda",
    "mu",
    "nu",
    "xi",
    "rho",
    "sigma",
    "tau",
    "upsilon",
    "phi",
    "varphi",
    "chi",
    "psi",
    "omega",
    "Gamma",
    "Delta",
    "Theta",
    "Lambda",
    "Xi",
    "Sigma",
    "Phi",
    "Psi",
    "Omega",
];

impl P {
    fn peek(&self) -> Option<&Tok> {
        self.t.get(self.i)
    }
    fn is_ch(&self, c: char) -> bool {
        matches!(self.peek(), Some(Tok::Ch(d)) if *d == c)
    }
    fn is_cmd(&self, n: &str) -> bool {
        matches!(self.peek(), Some(Tok::Cmd(d)) if d == n)
    }
    fn eat_ch(&mut self, c: char) -> bool {
        if self.is_ch(c) {
            self.i += 1;
            true
        } else {
            false
        }
    }
    fn eat_cmd(&mut self, n: &str) -> bool {
        if self.is_cmd(n) {
            self.i += 1;
            true
        } else {
            false
        }
    }
    fn enter(&mut self) -> Option<()> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            None
        } else {
            Some(())
        }
    }
    fn leave(&mut self) {
        self.depth = self.depth.saturating_sub(1);
    }

    fn at_list_end(&self) -> bool {
        match self.peek() {
            None => true,
            Some(Tok::Ch(c)) => matches!(c, ')' | ']' | '}' | '&'),
            Some(Tok::Cmd(c)) => c == "}" || c == "\\" || c == "end" || c == "rangle",
            _ => false,
        }
    }

    /// items separated by `,` / `;`
    fn list(&mut self) -> Option<(Vec<Node>, bool)> {
        self.enter()?;
        let mut items = Vec::new();
        let mut had_sep = false;
        if self.at_list_end() {
            self.leave();
            return Some((items, false));
        }
        items.push(self.rel()?);
        while self.is_ch(',') || self.is_ch(';') {
            self.i += 1;
            had_sep = true;
            if self.at_list_end() {
                break;
            }
            items.push(self.rel()?);
        }
        self.leave();
        Some((items, had_sep))
    }

    fn relop(&mut self) -> Option<RelOp> {
        let op = match self.peek()? {
            Tok::Ch('=') => RelOp::Eq,
            Tok::Ch('<') => {
                if matches!(self.t.get(self.i + 1), Some(Tok::Ch('='))) {
                    self.i += 1;
                    RelOp::Le
                } else {
                    RelOp::Lt
                }
            }
            Tok::Ch('>') => {
                if matches!(self.t.get(self.i + 1), Some(Tok::Ch('='))) {
                    self.i += 1;
                    RelOp::Ge
                } else {
                    RelOp::Gt
                }
            }
            Tok::Cmd(c) => match c.as_str() {
                "le" | "leqq" => RelOp::Le,
                "ge" | "geqq" => RelOp::Ge,
                "ne" => RelOp::Ne,
                "approx" | "equiv" => RelOp::Eq,
                _ => return None,
            },
            _ => return None,
        };
        self.i += 1;
        Some(op)
    }

    fn rel(&mut self) -> Option<Node> {
        self.enter()?;
        let first = self.union()?;
        let mut sides = vec![first];
        let mut ops = Vec::new();
        while let Some(op) = self.relop() {
            ops.push(op);
            sides.push(self.union()?);
        }
        self.leave();
        if ops.is_empty() {
            sides.pop()
        } else {
            Some(Node::Rel(sides, ops))
        }
    }

    fn union(&mut self) -> Option<Node> {
        let first = self.expr()?;
        if !self.is_cmd("cup") {
            return Some(first);
        }
        let mut parts = vec![first];
        while self.eat_cmd("cup") {
            parts.push(self.expr()?);
        }
        Some(Node::Union(parts))
    }

    fn expr(&mut self) -> Option<Node> {
        self.enter()?;
        let mut terms = Vec::new();
        let mut pm: Option<Node> = None;
        // leading sign handled by unary
        terms.push(self.term()?);
        loop {
            if self.eat_ch('+') {
                terms.push(self.term()?);
            } else if self.eat_ch('-') {
                let t = self.term()?;
                terms.push(Node::Neg(Box::new(t)));
            } else if self.eat_cmd("pm") {
                let t = self.term()?;
                if pm.is_some() {
                    return None;
                }
                pm = Some(t);
            } else {
                break;
            }
        }
        self.leave();
        let base = if terms.len() == 1 { terms.pop()? } else { Node::Add(terms) };
        Some(match pm {
            Some(t) => Node::Pm(Box::new(base), Box::new(t)),
            None => base,
        })
    }

    fn starts_factor(&self) -> bool {
        match self.peek() {
            Some(Tok::Num(_)) | Some(Tok::Letter(_)) => true,
            Some(Tok::Ch(c)) => matches!(c, '(' | '{'),
            Some(Tok::Cmd(c)) => {
                matches!(c.as_str(), "frac" | "sqrt" | "pi" | "infty" | "binom" | "begin")
                    || FUNCS.contains(&c.as_str())
                    || GREEK.contains(&c.as_str())
            }
            None => false,
        }
    }

    fn term(&mut self) -> Option<Node> {
        self.enter()?;
        let mut f = self.unary()?;
        loop {
            if self.eat_ch('*') || self.eat_cmd("cdot") || self.eat_cmd("times") || self.eat_cmd("ast") {
                let g = self.unary()?;
                f = mul(f, g);
            } else if self.eat_ch('/') || self.eat_cmd("div") {
                let g = self.unary()?;
                f = Node::Div(Box::new(f), Box::new(g));
            } else if self.starts_factor() {
                // mixed number: integer immediately followed by \frac{int}{int}
                let mixed = matches!(&f, Node::Num(v, false) if v.is_integer()) && self.is_cmd("frac");
                let g = self.power()?;
                if mixed && is_int_frac(&g) {
                    let neg = matches!(&f, Node::Num(v, _) if v.is_negative());
                    f = if neg { Node::Add(vec![f, Node::Neg(Box::new(g))]) } else { Node::Add(vec![f, g]) };
                } else {
                    f = mul(f, g);
                }
            } else {
                break;
            }
        }
        self.leave();
        Some(f)
    }

    fn unary(&mut self) -> Option<Node> {
        self.enter()?;
        let r = if self.eat_ch('-') {
            let u = self.unary()?;
            Some(match u {
                Node::Num(v, f) => Node::Num(-v, f),
                other => Node::Neg(Box::new(other)),
            })
        } else if self.eat_ch('+') {
            self.unary()
        } else if self.eat_cmd("pm") {
            let u = self.unary()?;
            Some(Node::Pm(Box::new(Node::Num(BigRational::zero(), false)), Box::new(u)))
        } else {
            self.power()
        };
        self.leave();
        r
    }

    fn power(&mut self) -> Option<Node> {
        self.enter()?;
        let mut b = self.primary()?;
        loop {
            if self.eat_ch('^') {
                let e = if self.is_ch('{') {
                    self.group()?
                } else if self.eat_ch('-') {
                    Node::Neg(Box::new(self.atom_arg()?))
                } else {
                    self.atom_arg()?
                };
                // right-assoc handled by nesting groups; a^b^c written without braces is rare
                b = Node::Pow(Box::new(b), Box::new(e));
            } else if self.eat_ch('!') {
                b = Node::Fact(Box::new(b));
            } else if self.eat_ch('%') || self.eat_cmd("%") {
                b = Node::Pct(Box::new(b));
            } else if self.eat_ch('\'') {
                // prime: ignore
            } else if self.eat_ch('_') {
                // subscript: base subscripts are dropped (math-verify behaviour);
                // symbol subscripts become part of the name
                let s = if self.is_ch('{') { self.raw_group()? } else { self.raw_one()? };
                if let Node::Sym(name) = &b {
                    b = Node::Sym(format!("{name}_{s}"));
                }
            } else {
                break;
            }
        }
        self.leave();
        Some(b)
    }

    /// raw text of a `{...}` group (for subscripts)
    fn raw_group(&mut self) -> Option<String> {
        if !self.eat_ch('{') {
            return None;
        }
        let mut depth = 1usize;
        let mut out = String::new();
        while let Some(t) = self.peek().cloned() {
            self.i += 1;
            match t {
                Tok::Ch('{') => depth += 1,
                Tok::Ch('}') => {
                    depth -= 1;
                    if depth == 0 {
                        return Some(out);
                    }
                }
                _ => {}
            }
            out.push_str(&tok_str(&t));
        }
        None
    }
    fn raw_one(&mut self) -> Option<String> {
        let t = self.peek()?.clone();
        self.i += 1;
        Some(tok_str(&t))
    }

    /// `{ list }` as a single node
    fn group(&mut self) -> Option<Node> {
        if !self.eat_ch('{') {
            return None;
        }
        let (mut items, sep) = self.list()?;
        if !self.eat_ch('}') {
            return None;
        }
        if items.len() == 1 && !sep {
            items.pop()
        } else {
            Some(Node::List(items))
        }
    }

    /// argument of \frac, \sqrt, ^ without braces: a single digit or token
    fn atom_arg(&mut self) -> Option<Node> {
        match self.peek()?.clone() {
            Tok::Num(n) => {
                let mut cs = n.chars();
                let first = cs.next()?;
                let rest: String = cs.collect();
                if rest.is_empty() || first == '.' {
                    self.i += 1;
                    num_node(&n)
                } else {
                    if let Some(slot) = self.t.get_mut(self.i) {
                        *slot = Tok::Num(rest);
                    }
                    num_node(&first.to_string())
                }
            }
            Tok::Ch('{') => self.group(),
            _ => self.primary(),
        }
    }

    fn arg(&mut self) -> Option<Node> {
        if self.is_ch('{') {
            self.group()
        } else {
            self.atom_arg()
        }
    }

    fn func_arg(&mut self) -> Option<Node> {
        if self.is_ch('{') {
            self.group()
        } else if self.is_ch('(') {
            self.primary()
        } else {
            self.power()
        }
    }

    fn primary(&mut self) -> Option<Node> {
        self.enter()?;
        let t = self.peek()?.clone();
        self.i += 1;
        let r = match t {
            Tok::Num(n) => num_node(&n),
            Tok::Letter(c) => Some(Node::Sym(c.to_string())),
            Tok::Ch('(') | Tok::Ch('[') => {
                let open = if t == Tok::Ch('(') { '(' } else { '[' };
                let (mut items, sep) = self.list()?;
                let close = match self.peek() {
                    Some(Tok::Ch(')')) => ')',
                    Some(Tok::Ch(']')) => ']',
                    _ => return None,
                };
                self.i += 1;
                if items.len() == 1 && !sep && ((open == '(' && close == ')') || (open == '[' && close == ']')) {
                    items.pop()
                } else {
                    Some(Node::Paren(open, close, items))
                }
            }
            Tok::Ch('{') => {
                self.i -= 1;
                self.group()
            }
            Tok::Ch('|') => {
                let e = self.expr()?;
                if !self.eat_ch('|') {
                    return None;
                }
                Some(Node::Abs(Box::new(e)))
            }
            Tok::Cmd(c) => self.command(&c),
            _ => None,
        };
        self.leave();
        r
    }

    fn command(&mut self, c: &str) -> Option<Node> {
        match c {
            "frac" => {
                let a = self.arg()?;
                let b = self.arg()?;
                Some(Node::Div(Box::new(a), Box::new(b)))
            }
            "binom" => {
                let a = self.arg()?;
                let b = self.arg()?;
                Some(Node::Binom(Box::new(a), Box::new(b)))
            }
            "sqrt" => {
                let idx = if self.eat_ch('[') {
                    let (mut items, _) = self.list()?;
                    if !self.eat_ch(']') || items.len() != 1 {
                        return None;
                    }
                    items.pop()?
                } else {
                    Node::Num(BigRational::from_integer(BigInt::from(2)), false)
                };
                let a = self.arg()?;
                Some(Node::Root(Box::new(a), Box::new(idx)))
            }
            "pi" => Some(Node::Pi),
            "infty" | "infinity" => Some(Node::Inf),
            "{" => {
                let (items, _) = self.list()?;
                if !self.eat_cmd("}") {
                    return None;
                }
                Some(Node::Set(items))
            }
            "langle" => {
                let (items, _) = self.list()?;
                if !self.eat_cmd("rangle") {
                    return None;
                }
                Some(Node::Paren('(', ')', items))
            }
            "lfloor" | "lceil" => {
                let e = self.expr()?;
                let close = if c == "lfloor" { "rfloor" } else { "rceil" };
                if !self.eat_cmd(close) {
                    return None;
                }
                Some(Node::Func(c.to_string(), Box::new(e)))
            }
            "begin" => self.matrix(),
            "exp" => {
                let a = self.func_arg()?;
                Some(Node::Pow(Box::new(Node::E), Box::new(a)))
            }
            "log" | "ln" | "lg" => {
                let base = if self.eat_ch('_') {
                    if self.is_ch('{') {
                        self.group()?
                    } else {
                        self.atom_arg()?
                    }
                } else if c == "ln" {
                    Node::E
                } else {
                    Node::Num(BigRational::from_integer(BigInt::from(10)), false)
                };
                let a = self.func_arg()?;
                Some(Node::Log(Box::new(a), Box::new(base)))
            }
            f if FUNCS.contains(&f) => {
                // optional power: \sin^2 x
                let mut pw = None;
                if self.eat_ch('^') {
                    pw = Some(self.arg()?);
                }
                let a = self.func_arg()?;
                let n = Node::Func(f.to_string(), Box::new(a));
                Some(match pw {
                    Some(p) => Node::Pow(Box::new(n), Box::new(p)),
                    None => n,
                })
            }
            g if GREEK.contains(&g) => Some(Node::Sym(g.to_ascii_lowercase())),
            "text" => {
                // leftover \text: take its content as a word symbol
                let s = self.raw_group()?;
                Some(Node::Sym(s.to_ascii_lowercase()))
            }
            // other named commands (`\angle`, `\triangle`, `\overline` ...) are
            // opaque symbols, as latex2sympy does for unknown names
            c if c.len() > 1
                && c.bytes().all(|b| b.is_ascii_alphabetic())
                && !matches!(
                    c,
                    "end" | "right" | "left" | "rangle" | "rfloor" | "rceil" | "cup" | "cap" | "in" | "to" | "quad"
                ) =>
            {
                Some(Node::Sym(format!("\\{c}")))
            }
            _ => None,
        }
    }

    fn matrix(&mut self) -> Option<Node> {
        let env = self.raw_group()?;
        if !env.contains("matrix") && env != "array" {
            return None;
        }
        if env == "array" && self.is_ch('{') {
            self.raw_group()?;
        }
        let mut rows = Vec::new();
        let mut row = Vec::new();
        loop {
            if self.eat_cmd("end") {
                self.raw_group()?;
                break;
            }
            let e = self.rel()?;
            row.push(e);
            if self.eat_ch('&') {
                continue;
            }
            if self.eat_cmd("\\") {
                rows.push(std::mem::take(&mut row));
                continue;
            }
            if self.is_cmd("end") {
                continue;
            }
            return None;
        }
        if !row.is_empty() {
            rows.push(row);
        }
        let w = rows.first()?.len();
        if rows.iter().any(|r| r.len() != w) {
            return None;
        }
        Some(Node::Matrix(rows))
    }
}

fn tok_str(t: &Tok) -> String {
    match t {
        Tok::Num(n) => n.clone(),
        Tok::Letter(c) => c.to_string(),
        Tok::Cmd(c) => c.clone(),
        Tok::Ch(c) => c.to_string(),
    }
}

fn is_int_frac(n: &Node) -> bool {
    match n {
        Node::Div(a, b) => {
            matches!(&**a, Node::Num(v, false) if v.is_integer())
                && matches!(&**b, Node::Num(v, false) if v.is_integer())
        }
        _ => false,
    }
}

fn mul(a: Node, b: Node) -> Node {
    match a {
        Node::Mul(mut v) => {
            v.push(b);
            Node::Mul(v)
        }
        other => Node::Mul(vec![other, b]),
    }
}

fn num_node(s: &str) -> Option<Node> {
    let is_float = s.contains('.');
    let (int, frac) = s.split_once('.').unwrap_or((s, ""));
    let digits = format!("{int}{frac}");
    let digits = if digits.is_empty() { "0".to_string() } else { digits };
    let n: BigInt = digits.parse().ok()?;
    let den = pow10(frac.len())?;
    Some(Node::Num(BigRational::new(n, den), is_float))
}

fn pow10(k: usize) -> Option<BigInt> {
    if k > MAX_DIGITS {
        return None;
    }
    Some(num_traits::pow(BigInt::from(10), k))
}

/// Parse a normalised answer. `None` when it is not a (supported) expression.
pub(crate) fn parse(s: &str) -> Option<Node> {
    let t = tokenize(s)?;
    if t.is_empty() {
        return None;
    }
    let mut p = P { t, i: 0, depth: 0 };
    let (mut items, sep) = p.list()?;
    if p.i != p.t.len() {
        return None;
    }
    if items.len() == 1 && !sep {
        items.pop()
    } else if items.is_empty() {
        None
    } else {
        Some(Node::List(items))
    }
}

// ---------------------------------------------------------------- evaluation

fn bits(r: &BigRational) -> u64 {
    r.numer().bits() + r.denom().bits()
}

fn checked(r: BigRational) -> Option<BigRational> {
    if bits(&r) > MAX_BITS {
        None
    } else {
        Some(r)
    }
}

fn rat_pow(b: &BigRational, e: i64) -> Option<BigRational> {
    if e.unsigned_abs() > 100_000 {
        return None;
    }
    let bb = bits(b).max(1);
    if bb.saturating_mul(e.unsigned_abs()) > MAX_BITS * 2 {
        // 0, 1 and -1 are fine
        if b.is_zero() {
            return if e > 0 { Some(BigRational::zero()) } else { None };
        }
        if b.abs().is_one() {
            return Some(if e % 2 == 0 { BigRational::one() } else { b.clone() });
        }
        return None;
    }
    if b.is_zero() && e < 0 {
        return None;
    }
    let p = num_traits::pow(b.clone(), e.unsigned_abs() as usize);
    let r = if e < 0 { p.recip() } else { p };
    checked(r)
}

/// Exact nth root of a rational when it is a perfect power.
fn rat_root(a: &BigRational, n: u32) -> Option<BigRational> {
    if n == 0 || n > 64 {
        return None;
    }
    if a.is_negative() {
        if n % 2 == 1 {
            return rat_root(&-a.clone(), n).map(|r| -r);
        }
        return None;
    }
    let rn = a.numer().nth_root(n);
    let rd = a.denom().nth_root(n);
    if num_traits::pow(rn.clone(), n as usize) == *a.numer() && num_traits::pow(rd.clone(), n as usize) == *a.denom() {
        Some(BigRational::new(rn, rd))
    } else {
        None
    }
}

fn small_int(r: &BigRational) -> Option<i64> {
    if r.is_integer() {
        r.numer().to_i64()
    } else {
        None
    }
}

/// Exact rational value of a constant expression, when it has one.
pub(crate) fn exact(n: &Node, depth: usize) -> Option<BigRational> {
    if depth > MAX_DEPTH {
        return None;
    }
    let d = depth + 1;
    match n {
        Node::Num(v, _) => Some(v.clone()),
        Node::Neg(a) => exact(a, d).map(|v| -v),
        Node::Add(v) => {
            let mut acc = BigRational::zero();
            for x in v {
                acc = checked(acc + exact(x, d)?)?;
            }
            Some(acc)
        }
        Node::Mul(v) => {
            let mut acc = BigRational::one();
            for x in v {
                acc = checked(acc * exact(x, d)?)?;
            }
            Some(acc)
        }
        Node::Div(a, b) => {
            let bv = exact(b, d)?;
            if bv.is_zero() {
                return None;
            }
            checked(exact(a, d)? / bv)
        }
        Node::Pow(a, b) => {
            let e = exact(b, d)?;
            let base = exact(a, d)?;
            if e.is_integer() {
                rat_pow(&base, e.numer().to_i64()?)
            } else {
                // rational exponent p/q: exact when base is a perfect q-th power
                let q = e.denom().to_u32()?;
                let r = rat_root(&base, q)?;
                rat_pow(&r, e.numer().to_i64()?)
            }
        }
        Node::Root(a, idx) => {
            let k = small_int(&exact(idx, d)?)?;
            rat_root(&exact(a, d)?, u32::try_from(k).ok()?)
        }
        Node::Pct(a) => Some(exact(a, d)? / BigRational::from_integer(BigInt::from(100))),
        Node::Fact(a) => {
            let k = small_int(&exact(a, d)?)?;
            if !(0..=1000).contains(&k) {
                return None;
            }
            let mut acc = BigInt::one();
            for i in 2..=k {
                acc *= i;
            }
            checked(BigRational::from_integer(acc))
        }
        Node::Binom(a, b) => {
            let nn = small_int(&exact(a, d)?)?;
            let kk = small_int(&exact(b, d)?)?;
            if nn < 0 || kk < 0 || nn > 100_000 || kk > 500 {
                return None;
            }
            if kk > nn {
                return Some(BigRational::zero());
            }
            let mut acc = BigInt::one();
            for i in 0..kk {
                acc = acc * (nn - i) / (i + 1);
            }
            checked(BigRational::from_integer(acc))
        }
        Node::Abs(a) => exact(a, d).map(|v| v.abs()),
        Node::Func(f, a) if f == "lfloor" || f == "lceil" => {
            let v = exact(a, d)?;
            Some(BigRational::from_integer(if f == "lfloor" { v.floor().to_integer() } else { v.ceil().to_integer() }))
        }
        _ => None,
    }
}

fn rat_f64(r: &BigRational) -> f64 {
    match (r.numer().to_f64(), r.denom().to_f64()) {
        (Some(a), Some(b)) if a.is_finite() && b.is_finite() && b != 0.0 => a / b,
        _ => {
            // scale down huge values
            let nb = r.numer().bits() as i64;
            let db = r.denom().bits() as i64;
            let shift = (nb - db) as f64;
            let sign = if r.numer().sign() == Sign::Minus { -1.0 } else { 1.0 };
            if shift > 1100.0 {
                sign * f64::INFINITY
            } else if shift < -1100.0 {
                0.0
            } else {
                let n = r.numer() >> (nb.saturating_sub(60).max(0) as usize);
                let dd = r.denom() >> (db.saturating_sub(60).max(0) as usize);
                let a = n.to_f64().unwrap_or(f64::NAN);
                let b = dd.to_f64().unwrap_or(f64::NAN);
                a / b * 2f64.powi((nb.saturating_sub(60).max(0) - db.saturating_sub(60).max(0)) as i32)
            }
        }
    }
}

pub(crate) fn to_f64(r: &BigRational) -> f64 {
    rat_f64(r)
}

/// Approximate real value; symbols are looked up with `env`.
pub(crate) fn approx(n: &Node, env: &dyn Fn(&str) -> Option<f64>, depth: usize) -> Option<f64> {
    if depth > MAX_DEPTH {
        return None;
    }
    let d = depth + 1;
    let r = match n {
        Node::Num(v, _) => rat_f64(v),
        Node::Sym(s) => env(s)?,
        Node::Pi => std::f64::consts::PI,
        Node::E => std::f64::consts::E,
        Node::Inf => f64::INFINITY,
        Node::Neg(a) => -approx(a, env, d)?,
        Node::Add(v) => {
            let mut acc = 0.0;
            for x in v {
                acc += approx(x, env, d)?;
            }
            acc
        }
        Node::Mul(v) => {
            let mut acc = 1.0;
            for x in v {
                acc *= approx(x, env, d)?;
            }
            acc
        }
        Node::Div(a, b) => approx(a, env, d)? / approx(b, env, d)?,
        Node::Pow(a, b) => {
            let base = approx(a, env, d)?;
            let e = approx(b, env, d)?;
            if base < 0.0 && e.fract() != 0.0 {
                // odd roots of negatives
                let inv = 1.0 / e;
                if (inv.round() - inv).abs() < 1e-9 && (inv.round() as i64) % 2 != 0 {
                    -(-base).powf(e)
                } else {
                    return None;
                }
            } else {
                base.powf(e)
            }
        }
        Node::Root(a, idx) => {
            let v = approx(a, env, d)?;
            let k = approx(idx, env, d)?;
            if k == 0.0 {
                return None;
            }
            if v < 0.0 {
                if k.fract() == 0.0 && (k as i64) % 2 != 0 {
                    -(-v).powf(1.0 / k)
                } else {
                    return None;
                }
            } else if k == 2.0 {
                v.sqrt()
            } else {
                v.powf(1.0 / k)
            }
        }
        Node::Log(a, b) => approx(a, env, d)?.ln() / approx(b, env, d)?.ln(),
        Node::Func(f, a) => {
            let x = approx(a, env, d)?;
            match f.as_str() {
                "sin" => x.sin(),
                "cos" => x.cos(),
                "tan" => x.tan(),
                "cot" => 1.0 / x.tan(),
                "sec" => 1.0 / x.cos(),
                "csc" => 1.0 / x.sin(),
                "arcsin" => x.asin(),
                "arccos" => x.acos(),
                "arctan" => x.atan(),
                "sinh" => x.sinh(),
                "cosh" => x.cosh(),
                "tanh" => x.tanh(),
                "lfloor" => x.floor(),
                "lceil" => x.ceil(),
                _ => return None,
            }
        }
        Node::Fact(a) => {
            let x = approx(a, env, d)?;
            if x < 0.0 || x.fract() != 0.0 || x > 170.0 {
                return None;
            }
            (1..=(x as u64)).map(|i| i as f64).product()
        }
        Node::Binom(_, _) => rat_f64(&exact(n, d)?),
        Node::Abs(a) => approx(a, env, d)?.abs(),
        Node::Pct(a) => approx(a, env, d)? / 100.0,
        _ => return None,
    };
    if r.is_nan() {
        return None;
    }
    // overflow of finite operands is not a value
    if r.is_infinite() && !matches!(n, Node::Inf | Node::Neg(_) | Node::Num(..)) {
        let mut any_inf = false;
        visit_children(n, &mut |c| {
            if matches!(c, Node::Inf) {
                any_inf = true;
            }
        });
        if !any_inf {
            return None;
        }
    }
    Some(r)
}

fn visit_children(n: &Node, f: &mut dyn FnMut(&Node)) {
    match n {
        Node::Neg(a) | Node::Fact(a) | Node::Abs(a) | Node::Pct(a) | Node::Func(_, a) => f(a),
        Node::Div(a, b) | Node::Pow(a, b) | Node::Root(a, b) | Node::Log(a, b) | Node::Binom(a, b) | Node::Pm(a, b) => {
            f(a);
            f(b);
        }
        Node::Add(v) | Node::Mul(v) => v.iter().for_each(f),
        _ => {}
    }
}

/// Free symbols of a node.
pub(crate) fn symbols(n: &Node, out: &mut Vec<String>, depth: usize) {
    if depth > MAX_DEPTH || out.len() > 64 {
        return;
    }
    let d = depth + 1;
    match n {
        Node::Sym(s) => {
            if !out.contains(s) {
                out.push(s.clone());
            }
        }
        Node::Num(..) | Node::Pi | Node::E | Node::Inf => {}
        Node::Neg(a) | Node::Fact(a) | Node::Abs(a) | Node::Pct(a) | Node::Func(_, a) => symbols(a, out, d),
        Node::Div(a, b) | Node::Pow(a, b) | Node::Root(a, b) | Node::Log(a, b) | Node::Binom(a, b) | Node::Pm(a, b) => {
            symbols(a, out, d);
            symbols(b, out, d);
        }
        Node::Add(v)
        | Node::Mul(v)
        | Node::Paren(_, _, v)
        | Node::Set(v)
        | Node::List(v)
        | Node::Union(v)
        | Node::Rel(v, _) => {
            for x in v {
                symbols(x, out, d);
            }
        }
        Node::Matrix(rows) => {
            for r in rows {
                for x in r {
                    symbols(x, out, d);
                }
            }
        }
    }
}
