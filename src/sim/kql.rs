//! The simulator's Kusto Query Language: a small, honest subset of KQL,
//! enough to target devices from Advanced Hunting tables, and a refusal
//! naming anything beyond it.
//!
//! Served (README, "The simulator's KQL"): a table name, then `|` and any
//! of `where` (with `==`, `!=`, `=~`, `!~`, `in`, `in~`, `!in`, `!in~`,
//! `startswith`, `has`, `contains` and their `!`/`_cs` forms, `and`, `or`,
//! `not(...)` and parentheses), `project` (column names only), `distinct`,
//! `take`/`limit`, and `summarize arg_max(COLUMN, *) by COLUMN[, ...]`.
//! Strings are `'...'` or `"..."` with backslash escapes, or verbatim
//! `@'...'`/`@"..."`; `//` starts a comment. Words and column names match
//! with regard to case, as in Kusto; `==` and `in` compare with regard to
//! case, `=~`, `in~`, `startswith`, `has` and `contains` without.
//!
//! A query is read in two steps, as a compiler would: [`tokenize`] turns
//! the text into tokens, then a recursive-descent parser builds a [`Query`]
//! whose every column is checked against the schema each operator sees;
//! only a query that passes both is run ([`run`]) over the [`Table`]s.

use std::collections::HashSet;
use std::fmt;

use serde_json::{Map, Value as Json, json};

/// Why a query is refused: the text of Graph's 400 `BadRequest`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct KqlError(pub(crate) String);

impl fmt::Display for KqlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A refusal, shorthand.
fn err<T>(message: impl Into<String>) -> Result<T, KqlError> {
    Err(KqlError(message.into()))
}

/// A column's type, as the result's `schema` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// Text.
    String,
    /// A point in time, held as its ISO 8601 text (which sorts in time order).
    DateTime,
    /// A 64-bit integer.
    Long,
    /// True or false.
    Bool,
}

impl Kind {
    /// The name in the reply's `schema`.
    fn name(self) -> &'static str {
        match self {
            Kind::String => "String",
            Kind::DateTime => "DateTime",
            Kind::Long => "Int64",
            Kind::Bool => "Boolean",
        }
    }
}

/// One cell.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum Cell {
    /// Text, or a time as ISO 8601 text.
    Text(String),
    /// An integer.
    Long(i64),
    /// A boolean.
    Bool(bool),
    /// No value (a long the device did not report).
    Null,
}

impl Cell {
    fn to_json(&self) -> Json {
        match self {
            Cell::Text(s) => json!(s),
            Cell::Long(n) => json!(n),
            Cell::Bool(b) => json!(b),
            Cell::Null => Json::Null,
        }
    }
}

/// A table: its columns and rows.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Table {
    /// The table's name (`DeviceInfo`).
    pub(crate) name: &'static str,
    /// Column names and types, in order.
    pub(crate) columns: Vec<(String, Kind)>,
    /// The rows, each a cell per column.
    pub(crate) rows: Vec<Vec<Cell>>,
}

/// A token of the query text.
#[derive(Debug, Clone, PartialEq)]
enum Token {
    /// A name: a table, a column, an operator word (`where`, `in~`, `!has`).
    Word(String),
    /// A string literal, unescaped.
    Str(String),
    /// A whole number.
    Number(i64),
    /// Punctuation and symbolic operators: `|`, `,`, `(`, `)`, `*`, `==`, ...
    Symbol(&'static str),
}

impl fmt::Display for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Token::Word(w) => f.write_str(w),
            Token::Str(s) => write!(f, "{s:?}"),
            Token::Number(n) => write!(f, "{n}"),
            Token::Symbol(s) => f.write_str(s),
        }
    }
}

/// Splits a query into tokens.
fn tokenize(text: &str) -> Result<Vec<Token>, KqlError> {
    let chars: Vec<char> = text.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    let word_char = |c: char| c.is_alphanumeric() || c == '_';
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        match c {
            _ if c.is_whitespace() => i += 1,
            '/' if next == Some('/') => {
                while i < chars.len() && chars[i] != '\n' {
                    i += 1;
                }
            }
            '\'' | '"' => {
                let (s, end) = string(&chars, i + 1, c, true)?;
                out.push(Token::Str(s));
                i = end;
            }
            '@' if matches!(next, Some('\'' | '"')) => {
                let (s, end) = string(&chars, i + 2, chars[i + 1], false)?;
                out.push(Token::Str(s));
                i = end;
            }
            _ if c.is_ascii_digit() => {
                let start = i;
                while i < chars.len() && chars[i].is_ascii_digit() {
                    i += 1;
                }
                if i < chars.len() && chars[i] == '.' {
                    return err(format!(
                        "Query could not be parsed at '{}': only whole numbers are supported by this simulator",
                        chars[start..=i].iter().collect::<String>()
                    ));
                }
                if i < chars.len() && word_char(chars[i]) {
                    let mut end = i;
                    while end < chars.len() && word_char(chars[end]) {
                        end += 1;
                    }
                    return err(format!(
                        "the timespan literal '{}' is not supported by this simulator",
                        chars[start..end].iter().collect::<String>()
                    ));
                }
                let digits: String = chars[start..i].iter().collect();
                let n = digits.parse::<i64>().map_err(|_| {
                    KqlError(format!("Query could not be parsed: the number {digits} is too large"))
                })?;
                out.push(Token::Number(n));
            }
            _ if word_char(c) => {
                let start = i;
                while i < chars.len() && word_char(chars[i]) {
                    i += 1;
                }
                let mut w: String = chars[start..i].iter().collect();
                if w == "in" && chars.get(i) == Some(&'~') {
                    w.push('~');
                    i += 1;
                }
                out.push(Token::Word(w));
            }
            '!' if next.is_some_and(word_char) => {
                let start = i + 1;
                i = start;
                while i < chars.len() && word_char(chars[i]) {
                    i += 1;
                }
                let mut w: String =
                    std::iter::once('!').chain(chars[start..i].iter().copied()).collect();
                if w == "!in" && chars.get(i) == Some(&'~') {
                    w.push('~');
                    i += 1;
                }
                out.push(Token::Word(w));
            }
            _ => {
                let two: String = chars[i..chars.len().min(i + 2)].iter().collect();
                let symbol = ["==", "!=", "=~", "!~", "<=", ">=", "<>"]
                    .into_iter()
                    .find(|s| *s == two)
                    .or_else(|| {
                        ["|", ",", "(", ")", "*", "=", "<", ">", ";", "[", "]", "."]
                            .into_iter()
                            .find(|s| s.starts_with(c))
                    });
                let Some(symbol) = symbol else {
                    return err(format!(
                        "Query could not be parsed at '{}': unexpected character",
                        c.escape_default()
                    ));
                };
                out.push(Token::Symbol(symbol));
                i += symbol.len();
            }
        }
    }
    Ok(out)
}

/// Reads a string literal whose opening quote was just before `start`:
/// the text and the index after the closing quote.
fn string(
    chars: &[char],
    start: usize,
    quote: char,
    escapes: bool,
) -> Result<(String, usize), KqlError> {
    let mut s = String::new();
    let mut i = start;
    while i < chars.len() {
        let c = chars[i];
        if c == quote {
            return Ok((s, i + 1));
        }
        if escapes && c == '\\' {
            let Some(&e) = chars.get(i + 1) else { break };
            s.push(match e {
                'n' => '\n',
                't' => '\t',
                'r' => '\r',
                other => other,
            });
            i += 2;
            continue;
        }
        s.push(c);
        i += 1;
    }
    err("Query could not be parsed: a string literal is not closed")
}

/// How a `where` compares a column with literals.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Compare {
    /// `==` (`ci`: `=~`).
    Equal { ci: bool },
    /// `in (...)` (`ci`: `in~`).
    In { ci: bool },
    /// `startswith` (`cs`: `startswith_cs`).
    StartsWith { cs: bool },
    /// `has`: a whole term (`cs`: `has_cs`).
    Has { cs: bool },
    /// `contains`: any substring (`cs`: `contains_cs`).
    Contains { cs: bool },
}

/// A `where` condition.
#[derive(Debug, Clone, PartialEq)]
enum Expr {
    And(Box<Expr>, Box<Expr>),
    Or(Box<Expr>, Box<Expr>),
    Not(Box<Expr>),
    /// `column op literal(s)`, negated for `!=`, `!~`, `!in`, `!has`, ...
    Test {
        column: usize,
        compare: Compare,
        negated: bool,
        values: Vec<Cell>,
    },
}

/// One tabular operator, its columns resolved to positions in the schema it sees.
#[derive(Debug, Clone, PartialEq)]
enum Step {
    Where(Expr),
    /// The columns kept, in order.
    Project(Vec<usize>),
    /// The columns whose distinct combinations are kept.
    Distinct(Vec<usize>),
    Take(usize),
    /// `summarize arg_max(max, *) by by...`.
    ArgMax {
        max: usize,
        by: Vec<usize>,
    },
}

/// A parsed, checked query.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Query {
    /// Which table.
    table: usize,
    /// Its operators, each with the schema it produces.
    steps: Vec<(Step, Vec<(String, Kind)>)>,
}

/// What this simulator serves, for refusals.
const SUPPORTED: &str =
    "supported: where, project, distinct, take, limit, summarize arg_max(COLUMN, *) by COLUMN";

/// The recursive-descent parser's position in the tokens.
struct Parser<'t> {
    tokens: &'t [Token],
    at: usize,
}

impl<'t> Parser<'t> {
    fn peek(&self) -> Option<&'t Token> {
        self.tokens.get(self.at)
    }

    fn next(&mut self) -> Option<&'t Token> {
        let t = self.tokens.get(self.at);
        self.at += usize::from(t.is_some());
        t
    }

    fn is_symbol(&self, s: &str) -> bool {
        matches!(self.peek(), Some(Token::Symbol(x)) if *x == s)
    }

    fn is_word(&self, w: &str) -> bool {
        matches!(self.peek(), Some(Token::Word(x)) if x == w)
    }

    fn expect_symbol(&mut self, s: &str, after: &str) -> Result<(), KqlError> {
        match self.next() {
            Some(Token::Symbol(x)) if *x == s => Ok(()),
            Some(t) => err(format!("Query could not be parsed at '{t}': expected '{s}' {after}")),
            None => err(format!("Query could not be parsed: expected '{s}' {after}")),
        }
    }

    fn word(&mut self, what: &str) -> Result<&'t str, KqlError> {
        match self.next() {
            Some(Token::Word(w)) if !w.starts_with('!') => Ok(w),
            Some(t) => err(format!("Query could not be parsed at '{t}': expected {what}")),
            None => err(format!("Query could not be parsed: expected {what}")),
        }
    }
}

/// The position of `name` in `schema`, or Kusto's refusal of an unknown name.
fn resolve(schema: &[(String, Kind)], name: &str) -> Result<usize, KqlError> {
    schema
        .iter()
        .position(|(n, _)| n == name)
        .ok_or_else(|| KqlError(format!("Failed to resolve scalar expression named '{name}'")))
}

/// Parses `text` and checks it against `tables`.
pub(crate) fn parse(text: &str, tables: &[Table]) -> Result<Query, KqlError> {
    let tokens = tokenize(text)?;
    let mut p = Parser { tokens: &tokens, at: 0 };
    let name = p.word("a table name")?;
    if name == "let" {
        return err(format!("let statements are not supported by this simulator ({SUPPORTED})"));
    }
    let Some(table) = tables.iter().position(|t| t.name == name) else {
        let known: Vec<&str> = tables.iter().map(|t| t.name).collect();
        return err(format!(
            "Failed to resolve table or column expression named '{name}' (this simulator serves {})",
            known.join(" and ")
        ));
    };
    let mut schema = tables[table].columns.clone();
    let mut steps = Vec::new();
    while let Some(t) = p.next() {
        if *t != Token::Symbol("|") {
            return err(format!("Query could not be parsed at '{t}': expected '|'"));
        }
        let op = p.word("a tabular operator")?;
        let step = match op {
            "where" => Step::Where(expr(&mut p, &schema)?),
            "project" => {
                let cols = columns(&mut p, &schema, "project")?;
                schema = cols.iter().map(|&c| schema[c].clone()).collect();
                Step::Project(cols)
            }
            "distinct" => {
                let cols = columns(&mut p, &schema, "distinct")?;
                schema = cols.iter().map(|&c| schema[c].clone()).collect();
                Step::Distinct(cols)
            }
            "take" | "limit" => match p.next() {
                Some(Token::Number(n)) if *n >= 0 => {
                    Step::Take(usize::try_from(*n).unwrap_or(usize::MAX))
                }
                Some(t) => {
                    return err(format!(
                        "Query could not be parsed at '{t}': {op} takes a whole number"
                    ));
                }
                None => {
                    return err(format!("Query could not be parsed: {op} takes a whole number"));
                }
            },
            "summarize" => {
                let (step, out) = summarize(&mut p, &schema)?;
                schema = out;
                step
            }
            other => {
                return err(format!(
                    "The tabular operator '{other}' is not supported by this simulator ({SUPPORTED})"
                ));
            }
        };
        steps.push((step, schema.clone()));
        if let Some(t) = p.peek()
            && *t != Token::Symbol("|")
        {
            return err(format!(
                "Query could not be parsed at '{t}': expected '|' or the end of the query"
            ));
        }
    }
    Ok(Query { table, steps })
}

/// `COLUMN, COLUMN, ...` (at least one) for `project` and `distinct`.
fn columns(
    p: &mut Parser<'_>,
    schema: &[(String, Kind)],
    op: &str,
) -> Result<Vec<usize>, KqlError> {
    let mut cols = Vec::new();
    loop {
        let name = p.word(&format!("a column name after {op}"))?;
        if p.is_symbol("=") {
            return err(format!(
                "{op} with a renamed or computed column ('{name} = ...') is not supported by this simulator; name existing columns only"
            ));
        }
        cols.push(resolve(schema, name)?);
        if !p.is_symbol(",") {
            return Ok(cols);
        }
        p.next();
    }
}

/// `arg_max(COLUMN, *) by COLUMN, ...`, and the schema it yields: the
/// `by` columns, then the `arg_max` column, then the rest in order (as Kusto
/// orders them).
fn summarize(
    p: &mut Parser<'_>,
    schema: &[(String, Kind)],
) -> Result<(Step, Vec<(String, Kind)>), KqlError> {
    let refuse = || {
        err(
            "summarize is supported by this simulator only as 'summarize arg_max(COLUMN, *) by COLUMN[, COLUMN...]'",
        )
    };
    if !p.is_word("arg_max") {
        return refuse();
    }
    p.next();
    p.expect_symbol("(", "after arg_max")?;
    let max = resolve(schema, p.word("a column in arg_max")?)?;
    p.expect_symbol(",", "in arg_max")?;
    if !p.is_symbol("*") {
        return refuse();
    }
    p.next();
    p.expect_symbol(")", "to close arg_max")?;
    if !p.is_word("by") {
        return refuse();
    }
    p.next();
    let by = columns(p, schema, "summarize ... by")?;
    let mut out: Vec<(String, Kind)> = by.iter().map(|&c| schema[c].clone()).collect();
    let mut order: Vec<usize> = by.clone();
    if !by.contains(&max) {
        order.push(max);
    }
    for c in 0..schema.len() {
        if !order.contains(&c) {
            order.push(c);
        }
    }
    out.extend(order[by.len()..].iter().map(|&c| schema[c].clone()));
    Ok((Step::ArgMax { max, by }, out))
}

/// `or` binds loosest: `a or b and c` is `a or (b and c)`.
fn expr(p: &mut Parser<'_>, schema: &[(String, Kind)]) -> Result<Expr, KqlError> {
    let mut left = conjunction(p, schema)?;
    while p.is_word("or") {
        p.next();
        left = Expr::Or(Box::new(left), Box::new(conjunction(p, schema)?));
    }
    Ok(left)
}

fn conjunction(p: &mut Parser<'_>, schema: &[(String, Kind)]) -> Result<Expr, KqlError> {
    let mut left = unary(p, schema)?;
    while p.is_word("and") {
        p.next();
        left = Expr::And(Box::new(left), Box::new(unary(p, schema)?));
    }
    Ok(left)
}

/// `not(...)`, `(...)` or one comparison.
fn unary(p: &mut Parser<'_>, schema: &[(String, Kind)]) -> Result<Expr, KqlError> {
    if p.is_word("not") {
        p.next();
        p.expect_symbol("(", "after not")?;
        let inner = expr(p, schema)?;
        p.expect_symbol(")", "to close not(...)")?;
        return Ok(Expr::Not(Box::new(inner)));
    }
    if p.is_symbol("(") {
        p.next();
        let inner = expr(p, schema)?;
        p.expect_symbol(")", "to close '('")?;
        return Ok(inner);
    }
    comparison(p, schema)
}

/// `COLUMN OP LITERAL` or `COLUMN in (LITERAL, ...)`.
fn comparison(p: &mut Parser<'_>, schema: &[(String, Kind)]) -> Result<Expr, KqlError> {
    let name = p.word("a column name in where")?;
    if p.is_symbol("(") {
        return err(format!(
            "the function '{name}()' is not supported by this simulator in where; compare a column with ==, !=, =~, !~, in, in~, startswith, has or contains"
        ));
    }
    let column = resolve(schema, name)?;
    let op = match p.next() {
        Some(Token::Symbol(s)) => (*s).to_string(),
        Some(Token::Word(w)) => w.clone(),
        Some(t) => {
            return err(format!(
                "Query could not be parsed at '{t}': expected an operator after {name}"
            ));
        }
        None => {
            return err(format!("Query could not be parsed: expected an operator after {name}"));
        }
    };
    let (negated, bare) = match op.strip_prefix('!') {
        Some(rest) if !rest.is_empty() && rest != "=" && rest != "~" => (true, rest.to_string()),
        _ => (false, op.clone()),
    };
    let (compare, negated) = match (op.as_str(), bare.as_str()) {
        ("==", _) => (Compare::Equal { ci: false }, false),
        ("!=", _) => (Compare::Equal { ci: false }, true),
        ("=~", _) => (Compare::Equal { ci: true }, false),
        ("!~", _) => (Compare::Equal { ci: true }, true),
        (_, "in") => (Compare::In { ci: false }, negated),
        (_, "in~") => (Compare::In { ci: true }, negated),
        (_, "startswith") => (Compare::StartsWith { cs: false }, negated),
        (_, "startswith_cs") => (Compare::StartsWith { cs: true }, negated),
        (_, "has") => (Compare::Has { cs: false }, negated),
        (_, "has_cs") => (Compare::Has { cs: true }, negated),
        (_, "contains") => (Compare::Contains { cs: false }, negated),
        (_, "contains_cs") => (Compare::Contains { cs: true }, negated),
        _ => {
            return err(format!(
                "the operator '{op}' is not supported by this simulator (supported: ==, !=, =~, !~, in, in~, !in, !in~, startswith, has, contains, their ! and _cs forms, and, or, not)"
            ));
        }
    };
    let kind = schema[column].1;
    let textual = !matches!(compare, Compare::Equal { ci: false } | Compare::In { ci: false });
    if textual && kind != Kind::String {
        return err(format!(
            "the operator '{op}' compares text; the column '{name}' is of type {}",
            kind.name()
        ));
    }
    let values = if matches!(compare, Compare::In { .. }) {
        p.expect_symbol("(", &format!("after {op}"))?;
        let mut values = vec![literal(p, kind, name)?];
        while p.is_symbol(",") {
            p.next();
            values.push(literal(p, kind, name)?);
        }
        p.expect_symbol(")", &format!("to close {op} (...)"))?;
        values
    } else {
        vec![literal(p, kind, name)?]
    };
    Ok(Expr::Test { column, compare, negated, values })
}

/// One literal, of the type of the column it is compared with.
fn literal(p: &mut Parser<'_>, kind: Kind, column: &str) -> Result<Cell, KqlError> {
    let t = p.next();
    let mismatch = |t: &Token| {
        err(format!("Cannot compare the column '{column}' of type {} with {t}", kind.name()))
    };
    match (kind, t) {
        (Kind::String, Some(Token::Str(s))) => Ok(Cell::Text(s.clone())),
        (Kind::Long, Some(Token::Number(n))) => Ok(Cell::Long(*n)),
        (Kind::Bool, Some(Token::Word(w))) if w == "true" || w == "false" => {
            Ok(Cell::Bool(w == "true"))
        }
        (Kind::DateTime, Some(_)) => err(format!(
            "comparing the DateTime column '{column}' is not supported by this simulator"
        )),
        (_, Some(t)) => mismatch(t),
        (_, None) => {
            err(format!("Query could not be parsed: expected a value to compare {column} with"))
        }
    }
}

/// Whether `hay` holds `needle` as whole terms: bounded on each side by
/// the text's edge or a character that is not a letter or digit.
fn has_term(hay: &str, needle: &str) -> bool {
    if needle.is_empty() {
        return true;
    }
    let mut from = 0;
    while let Some(i) = hay[from..].find(needle) {
        let start = from + i;
        let end = start + needle.len();
        let before = hay[..start].chars().next_back();
        let after = hay[end..].chars().next();
        let bounded = |c: Option<char>| c.is_none_or(|c| !c.is_alphanumeric());
        let edge_ok = |c: Option<char>, inner: Option<char>| {
            bounded(c) || inner.is_some_and(|i| !i.is_alphanumeric())
        };
        if edge_ok(before, needle.chars().next()) && edge_ok(after, needle.chars().next_back()) {
            return true;
        }
        from = start + hay[start..].chars().next().map_or(1, char::len_utf8);
    }
    false
}

impl Expr {
    fn eval(&self, row: &[Cell]) -> bool {
        match self {
            Expr::And(a, b) => a.eval(row) && b.eval(row),
            Expr::Or(a, b) => a.eval(row) || b.eval(row),
            Expr::Not(e) => !e.eval(row),
            Expr::Test { column, compare, negated, values } => {
                let cell = &row[*column];
                let hit = values.iter().any(|v| test(cell, *compare, v));
                hit != *negated
            }
        }
    }
}

/// One comparison of a cell with one literal.
fn test(cell: &Cell, compare: Compare, value: &Cell) -> bool {
    let (Cell::Text(a), Cell::Text(b)) = (cell, value) else {
        return matches!(compare, Compare::Equal { .. } | Compare::In { .. })
            && cell == value
            && *cell != Cell::Null;
    };
    let fold = |s: &str| s.to_lowercase();
    match compare {
        Compare::Equal { ci: false } | Compare::In { ci: false } => a == b,
        Compare::Equal { ci: true } | Compare::In { ci: true } => fold(a) == fold(b),
        Compare::StartsWith { cs: true } => a.starts_with(b.as_str()),
        Compare::StartsWith { cs: false } => fold(a).starts_with(&fold(b)),
        Compare::Has { cs: true } => has_term(a, b),
        Compare::Has { cs: false } => has_term(&fold(a), &fold(b)),
        Compare::Contains { cs: true } => a.contains(b.as_str()),
        Compare::Contains { cs: false } => fold(a).contains(&fold(b)),
    }
}

/// Runs a checked query: Graph's `huntingQueryResults` (`schema`, `results`).
pub(crate) fn run(query: &Query, tables: &[Table]) -> Map<String, Json> {
    let table = &tables[query.table];
    let mut schema = table.columns.clone();
    let mut rows: Vec<Vec<Cell>> = table.rows.clone();
    for (step, out) in &query.steps {
        rows = match step {
            Step::Where(e) => rows.into_iter().filter(|r| e.eval(r)).collect(),
            Step::Project(cols) => {
                rows.into_iter().map(|r| cols.iter().map(|&c| r[c].clone()).collect()).collect()
            }
            Step::Distinct(cols) => {
                let mut seen = HashSet::new();
                rows.into_iter()
                    .map(|r| cols.iter().map(|&c| r[c].clone()).collect::<Vec<_>>())
                    .filter(|r| seen.insert(r.clone()))
                    .collect()
            }
            Step::Take(n) => {
                rows.truncate(*n);
                rows
            }
            Step::ArgMax { max, by } => arg_max(rows, *max, by, schema.len()),
        };
        schema = out.clone();
    }
    let columns: Vec<Json> =
        schema.iter().map(|(n, k)| json!({"name": n, "type": k.name()})).collect();
    let results: Vec<Json> = rows
        .iter()
        .map(|r| {
            let obj: Map<String, Json> =
                schema.iter().zip(r).map(|((n, _), c)| (n.clone(), c.to_json())).collect();
            Json::Object(obj)
        })
        .collect();
    let mut reply = Map::new();
    reply.insert("schema".into(), Json::Array(columns));
    reply.insert("results".into(), Json::Array(results));
    reply
}

/// `summarize arg_max(max, *) by by`: per group, in order of first
/// appearance, the row with the greatest `max` (the first such on ties),
/// its cells reordered as [`summarize`]'s schema says.
fn arg_max(rows: Vec<Vec<Cell>>, max: usize, by: &[usize], width: usize) -> Vec<Vec<Cell>> {
    let mut groups: Vec<(Vec<Cell>, Vec<Cell>)> = Vec::new();
    let mut index: std::collections::HashMap<Vec<Cell>, usize> = std::collections::HashMap::new();
    for r in rows {
        let key: Vec<Cell> = by.iter().map(|&c| r[c].clone()).collect();
        match index.get(&key) {
            Some(&g) => {
                if r[max] > groups[g].1[max] {
                    groups[g].1 = r;
                }
            }
            None => {
                index.insert(key.clone(), groups.len());
                groups.push((key, r));
            }
        }
    }
    let mut order: Vec<usize> = by.to_vec();
    if !by.contains(&max) {
        order.push(max);
    }
    order.extend((0..width).filter(|c| !by.contains(c) && *c != max));
    groups.into_iter().map(|(_, r)| order.iter().map(|&c| r[c].clone()).collect()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(s: &str) -> Cell {
        Cell::Text(s.to_string())
    }

    /// A small `DeviceInfo`: three devices, the first reported twice.
    fn tables() -> Vec<Table> {
        let columns = vec![
            ("Timestamp".to_string(), Kind::DateTime),
            ("DeviceId".to_string(), Kind::String),
            ("DeviceName".to_string(), Kind::String),
            ("OSPlatform".to_string(), Kind::String),
            ("OSBuild".to_string(), Kind::Long),
            ("IsAzureADJoined".to_string(), Kind::Bool),
        ];
        let row = |t: &str, id: &str, name: &str, os: &str, build: Cell, aad: bool| {
            vec![text(t), text(id), text(name), text(os), build, Cell::Bool(aad)]
        };
        let rows = vec![
            row(
                "2026-11-01T00:00:00Z",
                "a1",
                "host-1.contoso.test",
                "Windows10",
                Cell::Long(19045),
                true,
            ),
            row(
                "2026-11-02T00:00:00Z",
                "a1",
                "host-1.contoso.test",
                "Windows10",
                Cell::Long(19045),
                true,
            ),
            row(
                "2026-11-02T00:00:00Z",
                "b2",
                "web-2.fabrikam.test",
                "Windows11",
                Cell::Long(22631),
                false,
            ),
            row("2026-11-03T00:00:00Z", "c3", "linux-3.contoso.test", "Linux", Cell::Null, false),
        ];
        vec![Table { name: "DeviceInfo", columns, rows }]
    }

    /// Runs `q` and returns its rows' `DeviceId`s.
    fn ids(q: &str) -> Vec<String> {
        let t = tables();
        let reply = run(&parse(q, &t).unwrap_or_else(|e| panic!("{q}: {e}")), &t);
        reply["results"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["DeviceId"].as_str().unwrap().to_string())
            .collect()
    }

    fn refusal(q: &str) -> String {
        parse(q, &tables()).expect_err(q).0
    }

    #[test]
    fn where_compares_as_kusto_does() {
        assert_eq!(ids("DeviceInfo | where OSPlatform == 'Windows10'"), ["a1", "a1"]);
        assert!(ids("DeviceInfo | where OSPlatform == 'windows10'").is_empty(), "== sees case");
        assert_eq!(ids("DeviceInfo | where OSPlatform =~ \"WINDOWS10\""), ["a1", "a1"]);
        assert_eq!(ids("DeviceInfo | where OSPlatform != 'Windows10'"), ["b2", "c3"]);
        assert_eq!(ids("DeviceInfo | where OSPlatform !~ 'windows10'"), ["b2", "c3"]);
        assert_eq!(ids("DeviceInfo | where OSPlatform in ('Linux', 'Windows11')"), ["b2", "c3"]);
        assert!(ids("DeviceInfo | where OSPlatform in ('linux')").is_empty());
        assert_eq!(ids("DeviceInfo | where OSPlatform in~ ('linux')"), ["c3"]);
        assert_eq!(ids("DeviceInfo | where OSPlatform !in ('Linux', 'Windows10')"), ["b2"]);
        assert_eq!(ids("DeviceInfo | where DeviceName startswith 'WEB-'"), ["b2"]);
        assert_eq!(ids("DeviceInfo | where DeviceName !startswith 'web-'"), ["a1", "a1", "c3"]);
        assert!(ids("DeviceInfo | where DeviceName startswith_cs 'WEB-'").is_empty());
        assert_eq!(ids("DeviceInfo | where DeviceName contains 'ABRIK'"), ["b2"]);
        assert_eq!(ids("DeviceInfo | where OSBuild == 22631"), ["b2"]);
        assert_eq!(ids("DeviceInfo | where IsAzureADJoined == true"), ["a1", "a1"]);
        assert_eq!(ids("DeviceInfo | where OSBuild != 19045"), ["b2", "c3"], "null is unequal");
    }

    #[test]
    fn has_matches_whole_terms_only() {
        assert_eq!(ids("DeviceInfo | where DeviceName has 'contoso'"), ["a1", "a1", "c3"]);
        assert_eq!(ids("DeviceInfo | where DeviceName has 'CONTOSO.test'"), ["a1", "a1", "c3"]);
        assert!(ids("DeviceInfo | where DeviceName has 'conto'").is_empty(), "a part of a term");
        assert!(ids("DeviceInfo | where DeviceName has 'ost'").is_empty());
        assert_eq!(ids("DeviceInfo | where DeviceName !has 'contoso'"), ["b2"]);
        assert!(has_term("a-b c", "b c") && !has_term("ab c", "b c") && has_term("x", ""));
    }

    #[test]
    fn and_binds_tighter_than_or_and_not_and_parentheses_group() {
        let q = "DeviceInfo | where OSPlatform == 'Linux' or OSPlatform == 'Windows11' and IsAzureADJoined == true";
        assert_eq!(ids(q), ["c3"]);
        let q = "DeviceInfo | where (OSPlatform == 'Linux' or OSPlatform == 'Windows11') and IsAzureADJoined == false";
        assert_eq!(ids(q), ["b2", "c3"]);
        assert_eq!(ids("DeviceInfo | where not(DeviceName has 'contoso')"), ["b2"]);
        assert_eq!(
            ids(
                "DeviceInfo\n// a comment | where\n| where not(OSPlatform == 'Linux') and not(OSPlatform startswith 'Windows1')"
            ),
            Vec::<String>::new()
        );
    }

    #[test]
    fn project_distinct_take_and_arg_max_shape_the_result() {
        let t = tables();
        let run_q = |q: &str| run(&parse(q, &t).unwrap(), &t);
        let r = run_q("DeviceInfo | project DeviceName, DeviceId | take 1");
        assert_eq!(
            Json::Object(r),
            json!({"schema": [{"name":"DeviceName","type":"String"},{"name":"DeviceId","type":"String"}],
                   "results": [{"DeviceName":"host-1.contoso.test","DeviceId":"a1"}]})
        );
        assert_eq!(ids("DeviceInfo | distinct DeviceId"), ["a1", "b2", "c3"]);
        assert_eq!(ids("DeviceInfo | limit 2"), ["a1", "a1"]);
        assert!(ids("DeviceInfo | take 0").is_empty());
        let r = run_q("DeviceInfo | summarize arg_max(Timestamp, *) by DeviceId");
        let names: Vec<&str> =
            r["schema"].as_array().unwrap().iter().map(|c| c["name"].as_str().unwrap()).collect();
        assert_eq!(
            names,
            ["DeviceId", "Timestamp", "DeviceName", "OSPlatform", "OSBuild", "IsAzureADJoined"]
        );
        let rows = r["results"].as_array().unwrap();
        assert_eq!(rows.len(), 3, "one row per device");
        assert_eq!(rows[0]["Timestamp"], "2026-11-02T00:00:00Z", "the latest report");
        assert_eq!(rows[2]["OSBuild"], Json::Null);
        // A column left out by project cannot be used after it.
        let e = refusal("DeviceInfo | project DeviceName | where DeviceId == 'a1'");
        assert_eq!(e, "Failed to resolve scalar expression named 'DeviceId'");
    }

    #[test]
    fn everything_else_is_refused_naming_what() {
        let cases = [
            (
                "DeviceEvents | take 1",
                "Failed to resolve table or column expression named 'DeviceEvents'",
            ),
            ("DeviceInfo | extend X = 1", "The tabular operator 'extend' is not supported"),
            (
                "DeviceInfo | order by Timestamp desc",
                "The tabular operator 'order' is not supported",
            ),
            ("DeviceInfo | join (DeviceInfo) on DeviceId", "'join' is not supported"),
            (
                "DeviceInfo | summarize count() by DeviceId",
                "summarize is supported by this simulator only as",
            ),
            ("DeviceInfo | summarize arg_max(Timestamp, DeviceName) by DeviceId", "only as"),
            (
                "DeviceInfo | where Timestamp > ago(1d)",
                "the timespan literal '1d' is not supported",
            ),
            (
                "DeviceInfo | where Timestamp == '2026-11-01'",
                "comparing the DateTime column 'Timestamp'",
            ),
            ("DeviceInfo | where OSBuild > 5", "the operator '>' is not supported"),
            (
                "DeviceInfo | where OSPlatform matches regex 'x'",
                "the operator 'matches' is not supported",
            ),
            (
                "DeviceInfo | where isnotempty(DeviceName)",
                "the function 'isnotempty()' is not supported",
            ),
            ("DeviceInfo | where Nope == 'x'", "Failed to resolve scalar expression named 'Nope'"),
            (
                "DeviceInfo | where OSBuild == 'x'",
                "Cannot compare the column 'OSBuild' of type Int64",
            ),
            (
                "DeviceInfo | where OSBuild has '1'",
                "compares text; the column 'OSBuild' is of type Int64",
            ),
            ("DeviceInfo | project N = DeviceName", "renamed or computed column"),
            ("DeviceInfo | where DeviceName == 'x", "a string literal is not closed"),
            ("DeviceInfo | take 1.5", "only whole numbers"),
            ("DeviceInfo | take", "take takes a whole number"),
            ("DeviceInfo DeviceId", "expected '|'"),
            (
                "DeviceInfo | where DeviceName == 'a' DeviceId",
                "expected '|' or the end of the query",
            ),
            ("DeviceInfo | where (DeviceName == 'a'", "expected ')'"),
            ("DeviceInfo | where DeviceName == 'a' ; ", "expected '|' or the end"),
            ("DeviceInfo | where DeviceName == #", "unexpected character"),
            ("", "expected a table name"),
            ("let x = 1; DeviceInfo", "let statements are not supported"),
        ];
        for (q, want) in cases {
            let e = refusal(q);
            assert!(e.contains(want), "{q}: {e}");
        }
    }

    #[test]
    fn strings_unescape_and_verbatim_strings_do_not() {
        let toks = tokenize(r#"'it\'s' "a\"b" @'c:\temp' @"d\n""#).unwrap();
        assert_eq!(
            toks,
            [
                Token::Str("it's".into()),
                Token::Str("a\"b".into()),
                Token::Str("c:\\temp".into()),
                Token::Str("d\\n".into())
            ]
        );
        assert_eq!(
            tokenize("x !in~ in~ !has").unwrap(),
            [
                Token::Word("x".into()),
                Token::Word("!in~".into()),
                Token::Word("in~".into()),
                Token::Word("!has".into())
            ]
        );
    }
}
