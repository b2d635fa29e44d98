//! The CEL subset request-attribute-reporter's expressions use, over the response's `usage`
//! object: number, bool, string and null literals; `usage` and field selection on it; `has()`;
//! `! - * / % + -`, comparisons, `&& ||`, `?:`, parentheses, `int()` and `double()`. Numbers are
//! one type here (upstream's usage fields are protobuf doubles already). Compiled once; an
//! evaluation error (a missing field, a wrong type) means no value, as upstream logs and skips.

use serde_json::{Map, Value};

#[derive(Debug, Clone, PartialEq)]
enum Expr {
    Num(f64),
    Bool(bool),
    Str(String),
    Null,
    Usage,
    Select(Box<Expr>, String),
    Has(Box<Expr>, String),
    Not(Box<Expr>),
    Neg(Box<Expr>),
    Binary(Op, Box<Expr>, Box<Expr>),
    Cond(Box<Expr>, Box<Expr>, Box<Expr>),
    Int(Box<Expr>),
    Double(Box<Expr>),
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Op {
    Or,
    And,
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    Add,
    Sub,
    Mul,
    Div,
    Rem,
}

#[derive(Debug, Clone, PartialEq)]
enum Val<'a> {
    Num(f64),
    Bool(bool),
    Str(String),
    Null,
    Map(&'a Map<String, Value>),
    List,
}

/// A compiled expression.
#[derive(Debug, Clone, PartialEq)]
pub struct UsageExpression(Expr);

impl UsageExpression {
    pub fn compile(text: &str) -> Result<UsageExpression, String> {
        let tokens = lex(text)?;
        let mut p = Parser { tokens, at: 0 };
        let e = p.conditional()?;
        match p.tokens.get(p.at) {
            None => Ok(UsageExpression(e)),
            Some(t) => Err(format!("unexpected {t:?} after the expression")),
        }
    }

    /// The value as a number (int or double results), None when it is another type or the
    /// evaluation fails.
    pub fn number(&self, usage: &Value) -> Option<f64> {
        match eval(&self.0, usage).ok()? {
            Val::Num(n) => Some(n),
            _ => None,
        }
    }

    /// The value as a bool, None when it is another type or the evaluation fails.
    pub fn boolean(&self, usage: &Value) -> Option<bool> {
        match eval(&self.0, usage).ok()? {
            Val::Bool(b) => Some(b),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Num(f64),
    Str(String),
    Ident(String),
    Sym(&'static str),
}

const SYMBOLS: [&str; 21] = [
    "&&", "||", "==", "!=", "<=", ">=", "<", ">", "!", "+", "-", "*", "/", "%", "?", ":", "(", ")",
    ".", ",", "=",
];

fn lex(text: &str) -> Result<Vec<Tok>, String> {
    let b = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if c.is_ascii_whitespace() {
            i += 1;
        } else if text[i..].starts_with("//") {
            i = text[i..].find('\n').map_or(b.len(), |n| i + n);
        } else if c.is_ascii_digit() {
            let start = i;
            while i < b.len() && (b[i].is_ascii_digit() || b[i] == b'.' || b[i] == b'e') {
                i += 1;
            }
            if i < b.len() && (b[i] == b'u' || b[i] == b'U') {
                i += 1; // an unsigned literal: one number type here
            }
            let digits = text[start..i].trim_end_matches(['u', 'U']);
            let n = digits
                .parse::<f64>()
                .map_err(|_| format!("bad number {:?}", &text[start..i]))?;
            out.push(Tok::Num(n));
        } else if c.is_ascii_alphabetic() || c == b'_' {
            let start = i;
            while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_') {
                i += 1;
            }
            out.push(Tok::Ident(text[start..i].to_owned()));
        } else if c == b'"' || c == b'\'' {
            let end = text[i + 1..].find(c as char).ok_or("unterminated string")?;
            out.push(Tok::Str(text[i + 1..i + 1 + end].to_owned()));
            i += end + 2;
        } else {
            let sym = SYMBOLS
                .iter()
                .find(|s| text[i..].starts_with(**s))
                .filter(|s| **s != "=")
                .ok_or_else(|| format!("unexpected character {:?}", c as char))?;
            out.push(Tok::Sym(sym));
            i += sym.len();
        }
    }
    Ok(out)
}

struct Parser {
    tokens: Vec<Tok>,
    at: usize,
}

impl Parser {
    fn eat(&mut self, sym: &str) -> bool {
        if matches!(self.tokens.get(self.at), Some(Tok::Sym(s)) if *s == sym) {
            self.at += 1;
            return true;
        }
        false
    }

    fn expect(&mut self, sym: &str) -> Result<(), String> {
        if self.eat(sym) {
            return Ok(());
        }
        Err(format!(
            "expected '{sym}', found {:?}",
            self.tokens.get(self.at)
        ))
    }

    fn conditional(&mut self) -> Result<Expr, String> {
        let test = self.binary(0)?;
        if !self.eat("?") {
            return Ok(test);
        }
        let then = self.conditional()?;
        self.expect(":")?;
        let otherwise = self.conditional()?;
        Ok(Expr::Cond(
            Box::new(test),
            Box::new(then),
            Box::new(otherwise),
        ))
    }

    /// Binary operators by CEL's precedence levels, loosest first.
    fn binary(&mut self, level: usize) -> Result<Expr, String> {
        const LEVELS: [&[(&str, Op)]; 5] = [
            &[("||", Op::Or)],
            &[("&&", Op::And)],
            &[
                ("==", Op::Eq),
                ("!=", Op::Ne),
                ("<=", Op::Le),
                (">=", Op::Ge),
                ("<", Op::Lt),
                (">", Op::Gt),
            ],
            &[("+", Op::Add), ("-", Op::Sub)],
            &[("*", Op::Mul), ("/", Op::Div), ("%", Op::Rem)],
        ];
        if level == LEVELS.len() {
            return self.unary();
        }
        let mut left = self.binary(level + 1)?;
        'more: loop {
            for (sym, op) in LEVELS[level] {
                if self.eat(sym) {
                    let right = self.binary(level + 1)?;
                    left = Expr::Binary(*op, Box::new(left), Box::new(right));
                    continue 'more;
                }
            }
            return Ok(left);
        }
    }

    fn unary(&mut self) -> Result<Expr, String> {
        if self.eat("!") {
            return Ok(Expr::Not(Box::new(self.unary()?)));
        }
        if self.eat("-") {
            return Ok(Expr::Neg(Box::new(self.unary()?)));
        }
        self.member()
    }

    fn member(&mut self) -> Result<Expr, String> {
        let mut e = self.primary()?;
        while self.eat(".") {
            e = Expr::Select(Box::new(e), self.ident()?);
        }
        Ok(e)
    }

    fn ident(&mut self) -> Result<String, String> {
        match self.tokens.get(self.at) {
            Some(Tok::Ident(name)) => {
                self.at += 1;
                Ok(name.clone())
            }
            other => Err(format!("expected a field name, found {other:?}")),
        }
    }

    fn primary(&mut self) -> Result<Expr, String> {
        let Some(tok) = self.tokens.get(self.at).cloned() else {
            return Err("the expression ends early".into());
        };
        self.at += 1;
        match tok {
            Tok::Num(n) => Ok(Expr::Num(n)),
            Tok::Str(s) => Ok(Expr::Str(s)),
            Tok::Sym("(") => {
                let e = self.conditional()?;
                self.expect(")")?;
                Ok(e)
            }
            Tok::Ident(name) => match name.as_str() {
                "true" => Ok(Expr::Bool(true)),
                "false" => Ok(Expr::Bool(false)),
                "null" => Ok(Expr::Null),
                "usage" => Ok(Expr::Usage),
                "has" | "int" | "double" => self.call(&name),
                _ => Err(format!(
                    "undeclared reference to '{name}' (only 'usage' is declared)"
                )),
            },
            Tok::Sym(s) => Err(format!("unexpected '{s}'")),
        }
    }

    fn call(&mut self, name: &str) -> Result<Expr, String> {
        self.expect("(")?;
        let arg = self.conditional()?;
        self.expect(")")?;
        Ok(match (name, arg) {
            ("has", Expr::Select(of, field)) => Expr::Has(of, field),
            ("has", _) => return Err("has() takes a field selection, e.g. has(usage.x)".into()),
            ("int", arg) => Expr::Int(Box::new(arg)),
            (_, arg) => Expr::Double(Box::new(arg)),
        })
    }
}

fn eval<'a>(e: &Expr, usage: &'a Value) -> Result<Val<'a>, String> {
    Ok(match e {
        Expr::Num(n) => Val::Num(*n),
        Expr::Bool(b) => Val::Bool(*b),
        Expr::Str(s) => Val::Str(s.clone()),
        Expr::Null => Val::Null,
        Expr::Usage => of_json(usage),
        Expr::Select(of, field) => match eval(of, usage)? {
            Val::Map(m) => of_json(
                m.get(field)
                    .ok_or_else(|| format!("no such key: {field}"))?,
            ),
            _ => return Err(format!("selecting '{field}' from a non-map")),
        },
        Expr::Has(of, field) => match eval(of, usage)? {
            Val::Map(m) => Val::Bool(m.contains_key(field)),
            _ => return Err(format!("has('{field}') on a non-map")),
        },
        Expr::Not(x) => Val::Bool(!truth(eval(x, usage)?)?),
        Expr::Neg(x) => Val::Num(-num(eval(x, usage)?)?),
        Expr::Int(x) => Val::Num(num(eval(x, usage)?)?.trunc()),
        Expr::Double(x) => Val::Num(num(eval(x, usage)?)?),
        Expr::Cond(test, then, otherwise) => {
            if truth(eval(test, usage)?)? {
                eval(then, usage)?
            } else {
                eval(otherwise, usage)?
            }
        }
        Expr::Binary(Op::Or, l, r) => Val::Bool(truth(eval(l, usage)?)? || truth(eval(r, usage)?)?),
        Expr::Binary(Op::And, l, r) => {
            Val::Bool(truth(eval(l, usage)?)? && truth(eval(r, usage)?)?)
        }
        Expr::Binary(op, l, r) => binary(*op, eval(l, usage)?, eval(r, usage)?)?,
    })
}

fn binary<'a>(op: Op, l: Val<'a>, r: Val<'a>) -> Result<Val<'a>, String> {
    if let (Op::Eq | Op::Ne, false) = (op, matches!((&l, &r), (Val::Num(_), Val::Num(_)))) {
        let same = match (&l, &r) {
            (Val::Bool(a), Val::Bool(b)) => a == b,
            (Val::Str(a), Val::Str(b)) => a == b,
            (Val::Null, Val::Null) => true,
            _ => false,
        };
        return Ok(Val::Bool(same == (op == Op::Eq)));
    }
    let (a, b) = (num(l)?, num(r)?);
    Ok(match op {
        Op::Add => Val::Num(a + b),
        Op::Sub => Val::Num(a - b),
        Op::Mul => Val::Num(a * b),
        Op::Div | Op::Rem if b == 0.0 => return Err("division by zero".into()),
        Op::Div => Val::Num(a / b),
        Op::Rem => Val::Num(a % b),
        Op::Eq => Val::Bool(a == b),
        Op::Ne => Val::Bool(a != b),
        Op::Lt => Val::Bool(a < b),
        Op::Le => Val::Bool(a <= b),
        Op::Gt => Val::Bool(a > b),
        Op::Ge => Val::Bool(a >= b),
        Op::Or | Op::And => unreachable!("short-circuited in eval"),
    })
}

fn of_json(v: &Value) -> Val<'_> {
    match v {
        Value::Null => Val::Null,
        Value::Bool(b) => Val::Bool(*b),
        Value::Number(n) => Val::Num(n.as_f64().unwrap_or(f64::NAN)),
        Value::String(s) => Val::Str(s.clone()),
        Value::Array(_) => Val::List,
        Value::Object(m) => Val::Map(m),
    }
}

fn num(v: Val<'_>) -> Result<f64, String> {
    match v {
        Val::Num(n) => Ok(n),
        other => Err(format!("{other:?} is not a number")),
    }
}

fn truth(v: Val<'_>) -> Result<bool, String> {
    match v {
        Val::Bool(b) => Ok(b),
        other => Err(format!("{other:?} is not a bool")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn usage() -> Value {
        serde_json::json!({"prompt_tokens": 12, "completion_tokens": 30, "total_tokens": 42,
            "prompt_tokens_details": {"cached_tokens": 8}})
    }

    fn number(text: &str, usage: &Value) -> Option<f64> {
        UsageExpression::compile(text).unwrap().number(usage)
    }

    #[test]
    fn upstreams_documented_expressions_evaluate_as_cel_does() {
        let u = usage();
        assert_eq!(
            number("usage.prompt_tokens + usage.completion_tokens", &u),
            Some(42.0)
        );
        assert_eq!(number("usage.prompt_tokens", &u), Some(12.0));
        assert_eq!(number("usage.completion_tokens\n", &u), Some(30.0));
        let total = "(has(usage.prompt_tokens) ? usage.prompt_tokens : 0) + \
                     (has(usage.completion_tokens) ? usage.completion_tokens : 0)";
        assert_eq!(number(total, &u), Some(42.0));
        let only_prompt = serde_json::json!({"prompt_tokens": 5});
        assert_eq!(number(total, &only_prompt), Some(5.0));
        let cond =
            UsageExpression::compile("has(usage.prompt_tokens) && has(usage.completion_tokens)")
                .unwrap();
        assert_eq!(cond.boolean(&u), Some(true));
        assert_eq!(cond.boolean(&only_prompt), Some(false));
    }

    #[test]
    fn precedence_nesting_and_casts_follow_cel() {
        let u = usage();
        assert_eq!(number("1 + 2 * 3 - 4 / 2", &u), Some(5.0));
        assert_eq!(number("-(1 + 2) % 2", &u), Some(-1.0));
        assert_eq!(
            number("usage.prompt_tokens_details.cached_tokens * 2", &u),
            Some(16.0)
        );
        assert_eq!(number("int(usage.completion_tokens / 7)", &u), Some(4.0));
        assert_eq!(
            number(
                "usage.total_tokens > 40 && !(usage.prompt_tokens == 0) ? 1 : 2",
                &u
            ),
            Some(1.0)
        );
        let b = |t: &str| UsageExpression::compile(t).unwrap().boolean(&u);
        assert_eq!(b("usage.total_tokens >= 42 || false"), Some(true));
        assert_eq!(
            b("has(usage.prompt_tokens_details.cached_tokens) // cached?"),
            Some(true)
        );
        assert_eq!(
            b("'a' == \"a\" && null == null && true != false"),
            Some(true)
        );
    }

    #[test]
    fn a_missing_field_or_a_wrong_type_gives_no_value() {
        let u = usage();
        assert_eq!(number("usage.reasoning_tokens", &u), None);
        assert_eq!(number("usage.prompt_tokens / 0", &u), None);
        assert_eq!(number("usage.prompt_tokens > 1", &u), None); // a bool, not a number
        let cond = UsageExpression::compile("usage.prompt_tokens").unwrap();
        assert_eq!(cond.boolean(&u), None);
    }

    #[test]
    fn malformed_expressions_are_refused_with_the_reason() {
        for (text, says) in [
            ("request.size", "undeclared reference to 'request'"),
            ("usage.", "expected a field name"),
            ("(usage.prompt_tokens", "expected ')'"),
            ("usage.a ? 1", "expected ':'"),
            ("has(usage)", "has() takes a field selection"),
            ("usage.a = 1", "unexpected character"),
            ("1 2", "after the expression"),
            ("", "ends early"),
        ] {
            let e = UsageExpression::compile(text).unwrap_err();
            assert!(e.contains(says), "{text:?}: {e}");
        }
    }
}
