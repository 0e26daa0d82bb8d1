//! The OData query options the list endpoints accept: a real `$filter`
//! parser (comparisons, `and`, `or`, parentheses, `startswith`), `$top` and
//! `$skip`, with the service's refusals for everything else (400 `ODataError`).
//!
//! Grammar of `$filter` (keywords lowercase, as OData writes them):
//!
//! ```text
//! expr    := and ("or" and)*
//! and     := primary ("and" primary)*
//! primary := "(" expr ")" | field op literal | "startswith" "(" field "," 'text' ")"
//! op      := eq | ne | gt | ge | lt | le
//! literal := 'text' ('' escapes a quote) | 2024-05-01T08:00:00Z | 42 | null | true | false
//! ```
//!
//! Field names are camelCase only and limited to those each entity lists;
//! string comparisons are case-sensitive; datetime literals are unquoted.

use std::cmp::Ordering;
use std::fmt;
use std::time::SystemTime;

use crate::api::odata::decode_form;
use crate::api::time::parse_utc;

/// The largest `$top` the service accepts, and the page size without one.
pub(crate) const MAX_TOP: usize = 10_000;

/// A query the service refuses: the message of its 400 `ODataError`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub(crate) struct ODataError(pub String);

/// The type of a filterable field, which decides the literals it may be compared with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FieldType {
    /// Text, compared ordinally and case-sensitively.
    Str,
    /// A timestamp, compared with unquoted ISO-8601 literals.
    DateTime,
    /// A number (`rbacGroupId`).
    Num,
    /// A list of strings (`machineTags`): `eq` means "contains", `ne` "does not contain".
    StrList,
}

/// The filterable fields and the properties of one entity set.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Schema {
    /// The OData type name quoted in error messages.
    pub(crate) type_name: &'static str,
    /// Field name (camelCase, exact) and type.
    pub(crate) fields: &'static [(&'static str, FieldType)],
    /// Every property of the entity, in the order the service writes
    /// them: what `$select` may name.
    pub(crate) properties: &'static [&'static str],
}

/// `GET machines`: the fields the documentation lists for `$filter`.
pub(crate) const MACHINES: Schema = Schema {
    type_name: "microsoft.windowsDefenderATP.api.PublicMachine",
    fields: &[
        ("computerDnsName", FieldType::Str),
        ("id", FieldType::Str),
        ("version", FieldType::Str),
        ("deviceValue", FieldType::Str),
        ("aadDeviceId", FieldType::Str),
        ("machineTags", FieldType::StrList),
        ("lastSeen", FieldType::DateTime),
        ("exposureLevel", FieldType::Str),
        ("onboardingStatus", FieldType::Str),
        ("lastIpAddress", FieldType::Str),
        ("healthStatus", FieldType::Str),
        ("osPlatform", FieldType::Str),
        ("riskScore", FieldType::Str),
        ("rbacGroupId", FieldType::Num),
    ],
    properties: crate::sim::fleet::KEY_ORDER,
};

/// `GET machineactions`: the fields the documentation lists for `$filter`.
pub(crate) const MACHINE_ACTIONS: Schema = Schema {
    type_name: "microsoft.windowsDefenderATP.api.PublicMachineAction",
    fields: &[
        ("id", FieldType::Str),
        ("status", FieldType::Str),
        ("machineId", FieldType::Str),
        ("type", FieldType::Str),
        ("requestor", FieldType::Str),
        ("creationDateTimeUtc", FieldType::DateTime),
    ],
    properties: &[
        "id",
        "type",
        "title",
        "requestor",
        "requestorComment",
        "status",
        "machineId",
        "computerDnsName",
        "creationDateTimeUtc",
        "lastUpdateDateTimeUtc",
        "cancellationRequestor",
        "cancellationComment",
        "cancellationDateTimeUtc",
        "errorHResult",
        "scope",
        "externalId",
        "requestSource",
        "relatedFileInfo",
        "commands",
        "troubleshootInfo",
    ],
};

/// A literal on the right of a comparison.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Literal {
    /// `'text'`.
    Str(String),
    /// An unquoted ISO-8601 timestamp.
    Time(SystemTime),
    /// An integer or decimal number.
    Num(f64),
    /// `true` / `false`.
    Bool(bool),
    /// `null`.
    Null,
}

/// A comparison operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CmpOp {
    /// `eq`
    Eq,
    /// `ne`
    Ne,
    /// `gt`
    Gt,
    /// `ge`
    Ge,
    /// `lt`
    Lt,
    /// `le`
    Le,
}

impl CmpOp {
    fn parse(s: &str) -> Option<CmpOp> {
        Some(match s {
            "eq" => CmpOp::Eq,
            "ne" => CmpOp::Ne,
            "gt" => CmpOp::Gt,
            "ge" => CmpOp::Ge,
            "lt" => CmpOp::Lt,
            "le" => CmpOp::Le,
            _ => return None,
        })
    }

    fn holds(self, ord: Ordering) -> bool {
        match self {
            CmpOp::Eq => ord == Ordering::Equal,
            CmpOp::Ne => ord != Ordering::Equal,
            CmpOp::Gt => ord == Ordering::Greater,
            CmpOp::Ge => ord != Ordering::Less,
            CmpOp::Lt => ord == Ordering::Less,
            CmpOp::Le => ord != Ordering::Greater,
        }
    }
}

/// A parsed `$filter` expression.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Filter {
    /// Both sides hold.
    And(Box<Filter>, Box<Filter>),
    /// Either side holds.
    Or(Box<Filter>, Box<Filter>),
    /// `field op literal`.
    Cmp {
        /// The field, as listed in the entity's [`Schema`].
        field: &'static str,
        /// The operator.
        op: CmpOp,
        /// The right-hand side.
        value: Literal,
    },
    /// `startswith(field,'prefix')`.
    StartsWith {
        /// The field, as listed in the entity's [`Schema`].
        field: &'static str,
        /// The prefix, compared case-sensitively.
        prefix: String,
    },
}

/// The value of a field of one entity, as a filter sees it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Value<'a> {
    /// Text (timestamps stored as text are parsed when compared with a datetime literal).
    Str(&'a str),
    /// A timestamp.
    Time(SystemTime),
    /// A number.
    Num(f64),
    /// A boolean.
    Bool(bool),
    /// Absent or null.
    Null,
    /// A list of strings.
    List(Vec<&'a str>),
}

impl Filter {
    /// Whether an entity whose fields `get` returns matches the filter.
    pub(crate) fn matches<'a>(&self, get: &impl Fn(&str) -> Value<'a>) -> bool {
        match self {
            Filter::And(a, b) => a.matches(get) && b.matches(get),
            Filter::Or(a, b) => a.matches(get) || b.matches(get),
            Filter::Cmp { field, op, value } => compare(&get(field), *op, value),
            Filter::StartsWith { field, prefix } => match get(field) {
                Value::Str(s) => s.starts_with(prefix.as_str()),
                Value::List(items) => items.iter().any(|s| s.starts_with(prefix.as_str())),
                _ => false,
            },
        }
    }
}

/// Evaluates `field op literal`. A null or mismatched field satisfies only `ne`.
fn compare(field: &Value<'_>, op: CmpOp, lit: &Literal) -> bool {
    if let Value::List(items) = field {
        return match op {
            CmpOp::Ne => !items.iter().any(|s| compare(&Value::Str(s), CmpOp::Eq, lit)),
            _ => items.iter().any(|s| compare(&Value::Str(s), op, lit)),
        };
    }
    let ord = match (field, lit) {
        (Value::Null, Literal::Null) => Some(Ordering::Equal),
        (Value::Str(a), Literal::Str(b)) => Some((*a).cmp(b.as_str())),
        (Value::Str(a), Literal::Time(b)) => parse_utc(a).map(|a| a.cmp(b)),
        (Value::Time(a), Literal::Time(b)) => Some(a.cmp(b)),
        (Value::Num(a), Literal::Num(b)) => a.partial_cmp(b),
        (Value::Str(a), Literal::Num(b)) => {
            a.trim().parse::<f64>().ok().and_then(|a| a.partial_cmp(b))
        }
        (Value::Bool(a), Literal::Bool(b)) => Some(a.cmp(b)),
        _ => None,
    };
    match ord {
        Some(o) => op.holds(o),
        None => op == CmpOp::Ne,
    }
}

/// The query options of one list request.
#[derive(Debug, Clone, PartialEq, Default)]
pub(crate) struct Query {
    /// `$filter`, parsed.
    pub(crate) filter: Option<Filter>,
    /// `$filter` as sent, for `@odata.nextLink`.
    pub(crate) filter_text: Option<String>,
    /// `$top`: at most this many entities in all.
    pub(crate) top: Option<usize>,
    /// `$skip`: entities to leave out first.
    pub(crate) skip: usize,
    /// `$select`: the properties to keep, as named (duplicates dropped);
    /// `None` keeps them all (no `$select`, or `$select=*`).
    pub(crate) select: Option<Vec<&'static str>>,
    /// `$select` as sent, for `@odata.nextLink`.
    pub(crate) select_text: Option<String>,
}

/// Reads a `$select` value against the properties of `schema`: a
/// comma-separated list of property names, exact case as `$filter`'s
/// fields; `*` selects everything (`None`). An unknown name is refused with
/// the message ASP.NET OData gives.
pub(crate) fn parse_select(
    value: &str,
    schema: &Schema,
) -> Result<Option<Vec<&'static str>>, ODataError> {
    if value.trim() == "*" {
        return Ok(None);
    }
    let mut out: Vec<&'static str> = Vec::new();
    for name in value.split(',').map(str::trim) {
        if name.is_empty() {
            return Err(ODataError(format!(
                "Syntax error: an empty property name in $select '{value}'."
            )));
        }
        let Some(&p) = schema.properties.iter().find(|p| **p == name) else {
            return Err(ODataError(format!(
                "Could not find a property named '{name}' on type '{}'.",
                schema.type_name
            )));
        };
        if !out.contains(&p) {
            out.push(p);
        }
    }
    Ok(Some(out))
}

/// Reads only `$select` from the query of a single-entity look-up (the
/// other options mean nothing there and are left alone, as before).
pub(crate) fn parse_select_only(
    raw: Option<&str>,
    schema: &Schema,
) -> Result<Option<Vec<&'static str>>, ODataError> {
    let mut select = None;
    for pair in raw.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        if decode_form(k) == "$select" {
            if select.is_some() {
                return Err(twice("$select"));
            }
            select = Some(parse_select(&decode_form(v), schema)?);
        }
    }
    Ok(select.flatten())
}

/// Keeps the `select`ed keys of an entity, in the entity's own order.
pub(crate) fn project(
    entity: serde_json::Map<String, serde_json::Value>,
    select: &[&str],
) -> serde_json::Map<String, serde_json::Value> {
    entity.into_iter().filter(|(k, _)| select.contains(&k.as_str())).collect()
}

/// The `@odata.context` fragment of an entity set under a projection:
/// `Machines(id,computerDnsName)`, the properties in `$select`'s order, as
/// OData writes it (the service's own form is not documented).
pub(crate) fn projected(set: &str, select: Option<&[&'static str]>) -> String {
    match select {
        Some(props) => format!("{set}({})", props.join(",")),
        None => set.to_string(),
    }
}

/// Reads the raw query string of a list request against `schema`.
/// Options other than `$filter`, `$top`, `$skip` and `$select` (such as `$orderby`) are
/// refused; parameters without a `$` are ignored.
pub(crate) fn parse_query(raw: Option<&str>, schema: &Schema) -> Result<Query, ODataError> {
    let mut q = Query::default();
    let (mut seen_top, mut seen_skip) = (false, false);
    for pair in raw.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let key = decode_form(k);
        let value = decode_form(v);
        match key.as_str() {
            "$filter" => {
                if q.filter_text.is_some() {
                    return Err(twice(&key));
                }
                q.filter = Some(parse_filter(&value, schema)?);
                q.filter_text = Some(value);
            }
            "$top" => {
                if std::mem::replace(&mut seen_top, true) {
                    return Err(twice(&key));
                }
                let top = parse_count(&key, &value)?;
                if top > MAX_TOP {
                    return Err(ODataError(format!(
                        "The limit of '{MAX_TOP}' for Top query has been exceeded. The value from the incoming request is '{value}'."
                    )));
                }
                q.top = Some(top);
            }
            "$skip" => {
                if std::mem::replace(&mut seen_skip, true) {
                    return Err(twice(&key));
                }
                q.skip = parse_count(&key, &value)?;
            }
            "$select" => {
                if q.select_text.is_some() {
                    return Err(twice(&key));
                }
                q.select = parse_select(&value, schema)?;
                q.select_text = Some(value);
            }
            k if k.starts_with('$') => {
                return Err(ODataError(format!("The query parameter '{k}' is not supported.")));
            }
            _ => {}
        }
    }
    Ok(q)
}

fn twice(key: &str) -> ODataError {
    ODataError(format!("The query parameter '{key}' is specified more than once."))
}

fn parse_count(key: &str, value: &str) -> Result<usize, ODataError> {
    let v = value.trim();
    if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ODataError(format!(
            "Invalid value '{value}' for {key} query option found. The {key} query option requires a non-negative integer value."
        )));
    }
    // All digits: only an overflow can fail, and such a number is too big anyway.
    Ok(v.parse().unwrap_or(usize::MAX))
}

/// A lexical token of `$filter`.
#[derive(Debug, Clone, PartialEq)]
enum Tok {
    /// `(`
    LParen,
    /// `)`
    RParen,
    /// `,`
    Comma,
    /// A name: field, operator, keyword or function.
    Word(String),
    /// A quoted string, unescaped.
    Str(String),
    /// An unquoted literal that starts with a digit or `-`: number or datetime.
    Bare(String),
}

impl fmt::Display for Tok {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Tok::LParen => f.write_str("("),
            Tok::RParen => f.write_str(")"),
            Tok::Comma => f.write_str(","),
            Tok::Word(w) | Tok::Bare(w) => f.write_str(w),
            Tok::Str(s) => write!(f, "'{}'", s.replace('\'', "''")),
        }
    }
}

fn lex(text: &str) -> Result<Vec<Tok>, ODataError> {
    let chars: Vec<char> = text.chars().collect();
    let mut toks = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        match c {
            ' ' | '\t' | '\r' | '\n' => i += 1,
            '(' => {
                toks.push(Tok::LParen);
                i += 1;
            }
            ')' => {
                toks.push(Tok::RParen);
                i += 1;
            }
            ',' => {
                toks.push(Tok::Comma);
                i += 1;
            }
            '\'' => {
                let mut s = String::new();
                i += 1;
                loop {
                    match chars.get(i) {
                        None => {
                            return Err(ODataError(format!(
                                "Syntax error: unterminated string literal in '{text}'."
                            )));
                        }
                        Some('\'') if chars.get(i + 1) == Some(&'\'') => {
                            s.push('\'');
                            i += 2;
                        }
                        Some('\'') => {
                            i += 1;
                            break;
                        }
                        Some(&ch) => {
                            s.push(ch);
                            i += 1;
                        }
                    }
                }
                toks.push(Tok::Str(s));
            }
            c if c.is_ascii_digit() || c == '-' => {
                let start = i;
                while i < chars.len()
                    && (chars[i].is_ascii_alphanumeric() || ":.-+".contains(chars[i]))
                {
                    i += 1;
                }
                toks.push(Tok::Bare(chars[start..i].iter().collect()));
            }
            c if c.is_alphabetic() || c == '_' || c == '$' => {
                let start = i;
                while i < chars.len() && (chars[i].is_alphanumeric() || "_./$".contains(chars[i])) {
                    i += 1;
                }
                toks.push(Tok::Word(chars[start..i].iter().collect()));
            }
            other => {
                return Err(ODataError(format!(
                    "Syntax error: character '{other}' is not valid at position {i} in '{text}'."
                )));
            }
        }
    }
    Ok(toks)
}

/// Parses `$filter` text against the fields of `schema`.
pub(crate) fn parse_filter(text: &str, schema: &Schema) -> Result<Filter, ODataError> {
    let toks = lex(text)?;
    if toks.is_empty() {
        return Err(ODataError("The $filter expression must not be empty.".to_string()));
    }
    let mut p = Parser { toks, pos: 0, text, schema };
    let f = p.expr(0)?;
    if let Some(t) = p.toks.get(p.pos) {
        return Err(p.syntax(&format!("unexpected '{t}'")));
    }
    Ok(f)
}

/// Recursive-descent parser over the token list.
struct Parser<'s> {
    /// The tokens of the whole expression.
    toks: Vec<Tok>,
    /// Index of the next token to read.
    pos: usize,
    /// The expression as sent, quoted in syntax errors.
    text: &'s str,
    /// The fields that may be named.
    schema: &'s Schema,
}

/// Nesting deeper than this is refused rather than risking the stack.
const MAX_DEPTH: usize = 100;

impl Parser<'_> {
    fn syntax(&self, why: &str) -> ODataError {
        ODataError(format!("Syntax error: {why} in $filter '{}'.", self.text))
    }

    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.pos)
    }

    fn next(&mut self) -> Option<Tok> {
        let t = self.toks.get(self.pos).cloned();
        self.pos += 1;
        t
    }

    fn is_word(&self, w: &str) -> bool {
        matches!(self.peek(), Some(Tok::Word(x)) if x == w)
    }

    fn expect(&mut self, want: Tok) -> Result<(), ODataError> {
        match self.next() {
            Some(t) if t == want => Ok(()),
            Some(t) => Err(self.syntax(&format!("expected '{want}' but found '{t}'"))),
            None => Err(self.syntax(&format!("expected '{want}' at the end"))),
        }
    }

    fn expr(&mut self, depth: usize) -> Result<Filter, ODataError> {
        let mut left = self.and(depth)?;
        while self.is_word("or") {
            self.pos += 1;
            let right = self.and(depth)?;
            left = Filter::Or(Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn and(&mut self, depth: usize) -> Result<Filter, ODataError> {
        let mut left = self.primary(depth)?;
        while self.is_word("and") {
            self.pos += 1;
            let right = self.primary(depth)?;
            left = Filter::And(Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn field(&self, name: &str) -> Result<(&'static str, FieldType), ODataError> {
        self.schema.fields.iter().find(|(f, _)| *f == name).copied().ok_or_else(|| {
            ODataError(format!(
                "Could not find a property named '{name}' on type '{}'. Filterable properties (camelCase): {}.",
                self.schema.type_name,
                self.schema.fields.iter().map(|(f, _)| *f).collect::<Vec<_>>().join(", ")
            ))
        })
    }

    fn primary(&mut self, depth: usize) -> Result<Filter, ODataError> {
        if depth > MAX_DEPTH {
            return Err(self.syntax("expression nested too deeply"));
        }
        match self.next() {
            Some(Tok::LParen) => {
                let inner = self.expr(depth + 1)?;
                self.expect(Tok::RParen)?;
                Ok(inner)
            }
            Some(Tok::Word(w)) if matches!(self.peek(), Some(Tok::LParen)) => {
                if w != "startswith" {
                    return Err(ODataError(format!(
                        "The function '{w}' is not supported in $filter (only startswith is)."
                    )));
                }
                self.pos += 1;
                let field = match self.next() {
                    Some(Tok::Word(f)) => f,
                    other => {
                        return Err(self.syntax(&format!(
                            "startswith expects a property name first, found '{}'",
                            other.map(|t| t.to_string()).unwrap_or_default()
                        )));
                    }
                };
                let (field, ty) = self.field(&field)?;
                if !matches!(ty, FieldType::Str | FieldType::StrList) {
                    return Err(ODataError(format!(
                        "startswith cannot be applied to '{field}', which is not a string."
                    )));
                }
                self.expect(Tok::Comma)?;
                let prefix = match self.next() {
                    Some(Tok::Str(s)) => s,
                    other => {
                        return Err(self.syntax(&format!(
                            "startswith expects a quoted string second, found '{}'",
                            other.map(|t| t.to_string()).unwrap_or_default()
                        )));
                    }
                };
                self.expect(Tok::RParen)?;
                Ok(Filter::StartsWith { field, prefix })
            }
            Some(Tok::Word(w)) if w == "not" => {
                Err(ODataError("The operator 'not' is not supported in $filter.".to_string()))
            }
            Some(Tok::Word(name)) => {
                let (field, ty) = self.field(&name)?;
                let op = match self.next() {
                    Some(Tok::Word(o)) => CmpOp::parse(&o).ok_or_else(|| {
                        ODataError(format!(
                            "The operator '{o}' is not supported in $filter (use eq, ne, gt, ge, lt, le, and, or)."
                        ))
                    })?,
                    Some(t) => return Err(self.syntax(&format!("expected an operator after '{field}', found '{t}'"))),
                    None => return Err(self.syntax(&format!("expected an operator after '{field}'"))),
                };
                let value = self.literal(field, ty)?;
                if matches!(ty, FieldType::StrList) && !matches!(op, CmpOp::Eq | CmpOp::Ne) {
                    return Err(ODataError(format!(
                        "The operator is not supported on the collection property '{field}' (use eq or ne)."
                    )));
                }
                Ok(Filter::Cmp { field, op, value })
            }
            Some(t) => Err(self.syntax(&format!("unexpected '{t}'"))),
            None => Err(self.syntax("unexpected end of expression")),
        }
    }

    fn literal(&mut self, field: &str, ty: FieldType) -> Result<Literal, ODataError> {
        let lit = match self.next() {
            Some(Tok::Str(s)) => Literal::Str(s),
            Some(Tok::Bare(b)) => {
                if b.contains('T') && b.contains(':') {
                    match parse_utc(&b) {
                        Some(t) => Literal::Time(t),
                        None => {
                            return Err(ODataError(format!(
                                "The datetime literal '{b}' is not valid (use ISO-8601 UTC, e.g. 2024-05-01T08:00:00Z)."
                            )));
                        }
                    }
                } else {
                    match b.parse::<f64>() {
                        Ok(n) if n.is_finite() => Literal::Num(n),
                        _ => return Err(self.syntax(&format!("'{b}' is not a valid literal"))),
                    }
                }
            }
            Some(Tok::Word(w)) if w == "null" => Literal::Null,
            Some(Tok::Word(w)) if w == "true" => Literal::Bool(true),
            Some(Tok::Word(w)) if w == "false" => Literal::Bool(false),
            Some(t) => {
                return Err(self.syntax(&format!(
                    "expected a literal after the operator on '{field}', found '{t}' (strings are quoted with ')"
                )));
            }
            None => {
                return Err(
                    self.syntax(&format!("expected a literal after the operator on '{field}'"))
                );
            }
        };
        let edm = |ty: FieldType| match ty {
            FieldType::Str => "Edm.String",
            FieldType::DateTime => "Edm.DateTimeOffset",
            FieldType::Num => "Edm.Int64",
            FieldType::StrList => "Collection(Edm.String)",
        };
        let lit_edm = match &lit {
            Literal::Str(_) => "Edm.String",
            Literal::Time(_) => "Edm.DateTimeOffset",
            Literal::Num(_) => "Edm.Int64",
            Literal::Bool(_) => "Edm.Boolean",
            Literal::Null => return Ok(lit),
        };
        let compatible = matches!(
            (ty, &lit),
            (FieldType::Str | FieldType::StrList, Literal::Str(_))
                | (FieldType::DateTime, Literal::Time(_))
                | (FieldType::Num, Literal::Num(_))
        );
        if compatible {
            Ok(lit)
        } else {
            Err(ODataError(format!(
                "A binary operator with incompatible types was detected. Found operand types '{}' and '{lit_edm}' for property '{field}'.",
                edm(ty)
            )))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(f: &Filter, fields: &[(&str, Value<'static>)]) -> bool {
        f.matches(&|name: &str| {
            fields.iter().find(|(n, _)| *n == name).map(|(_, v)| v.clone()).unwrap_or(Value::Null)
        })
    }

    #[test]
    fn parses_the_documented_query_shapes() {
        let f = parse_filter("computerDnsName eq 'host-00001.contoso.test'", &MACHINES).unwrap();
        assert!(m(&f, &[("computerDnsName", Value::Str("host-00001.contoso.test"))]));
        assert!(!m(&f, &[("computerDnsName", Value::Str("HOST-00001.contoso.test"))]));
        let f = parse_filter("startswith(computerDnsName,'host-0')", &MACHINES).unwrap();
        assert!(m(&f, &[("computerDnsName", Value::Str("host-00001"))]));
        let f = parse_filter(
            "requestor eq 'x' and type eq 'RunAntiVirusScan' or (status ne 'Pending')",
            &MACHINE_ACTIONS,
        )
        .unwrap();
        assert!(matches!(f, Filter::Or(..)));
        assert!(m(&f, &[("requestor", Value::Str("x")), ("type", Value::Str("RunAntiVirusScan"))]));
        assert!(m(&f, &[("status", Value::Str("Succeeded"))]));
        assert!(!m(&f, &[("status", Value::Str("Pending"))]));
    }

    #[test]
    fn and_binds_tighter_than_or_and_parentheses_override() {
        let a = parse_filter("id eq 'a' or id eq 'b' and status eq 'x'", &MACHINE_ACTIONS).unwrap();
        assert!(m(&a, &[("id", Value::Str("a"))]));
        let b =
            parse_filter("(id eq 'a' or id eq 'b') and status eq 'x'", &MACHINE_ACTIONS).unwrap();
        assert!(!m(&b, &[("id", Value::Str("a"))]));
        assert!(m(&b, &[("id", Value::Str("b")), ("status", Value::Str("x"))]));
    }

    #[test]
    fn quotes_datetimes_numbers_and_lists() {
        let f = parse_filter("computerDnsName eq 'o''brien'", &MACHINES).unwrap();
        assert!(m(&f, &[("computerDnsName", Value::Str("o'brien"))]));
        let f = parse_filter("lastSeen gt 2024-05-01T08:00:00Z", &MACHINES).unwrap();
        assert!(m(&f, &[("lastSeen", Value::Str("2024-05-01T08:00:00.0000001Z"))]));
        assert!(!m(&f, &[("lastSeen", Value::Str("2024-05-01T08:00:00Z"))]));
        let f = parse_filter("rbacGroupId ge 140", &MACHINES).unwrap();
        assert!(m(&f, &[("rbacGroupId", Value::Num(140.0))]));
        assert!(!m(&f, &[("rbacGroupId", Value::Num(139.0))]));
        let f = parse_filter("machineTags eq 'vip'", &MACHINES).unwrap();
        assert!(m(&f, &[("machineTags", Value::List(vec!["a", "vip"]))]));
        let f = parse_filter("machineTags ne 'vip'", &MACHINES).unwrap();
        assert!(!m(&f, &[("machineTags", Value::List(vec!["a", "vip"]))]));
        let f = parse_filter("aadDeviceId eq null", &MACHINES).unwrap();
        assert!(m(&f, &[]));
        let f = parse_filter("aadDeviceId ne 'x'", &MACHINES).unwrap();
        assert!(m(&f, &[]));
    }

    #[test]
    fn refuses_what_the_service_refuses() {
        for bad in [
            "",
            "ComputerDnsName eq 'x'",
            "computerDnsName eq x",
            "computerDnsName eq 'x",
            "computerDnsName like 'x'",
            "computerDnsName EQ 'x'",
            "contains(computerDnsName,'x')",
            "not computerDnsName eq 'x'",
            "lastSeen gt '2024-05-01T08:00:00Z'",
            "computerDnsName eq 2024-05-01T08:00:00Z",
            "rbacGroupId eq '140'",
            "(computerDnsName eq 'x'",
            "computerDnsName eq 'x')",
            "computerDnsName eq 'x' and",
            "startswith(lastSeen,'2024')",
            "machineTags gt 'a'",
            "osPlatform eq 'Linux' ; drop",
        ] {
            assert!(parse_filter(bad, &MACHINES).is_err(), "{bad}");
        }
    }

    #[test]
    fn query_options() {
        let q = parse_query(
            Some("$top=2&$skip=3&$filter=id%20eq%20'a'&api-version=1"),
            &MACHINE_ACTIONS,
        )
        .unwrap();
        assert_eq!((q.top, q.skip), (Some(2), 3));
        assert_eq!(q.filter_text.as_deref(), Some("id eq 'a'"));
        assert!(parse_query(Some("$top=10001"), &MACHINES).is_err());
        assert!(parse_query(Some("$top=10000"), &MACHINES).is_ok());
        assert!(parse_query(Some("$top=-1"), &MACHINES).is_err());
        assert!(parse_query(Some("$skip=x"), &MACHINES).is_err());
        assert!(parse_query(Some("$orderby=lastSeen"), &MACHINES).is_err());
        assert!(parse_query(Some("$top=1&$top=2"), &MACHINES).is_err());
        assert_eq!(parse_query(None, &MACHINES).unwrap(), Query::default());
    }

    #[test]
    fn select_properties_are_the_entities_own_keys_in_order() {
        let doc = std::fs::read_to_string(format!(
            "{}/tests/fixtures/machineaction-doc-example.json",
            env!("CARGO_MANIFEST_DIR")
        ))
        .unwrap();
        let a: crate::api::model::MachineAction = serde_json::from_str(&doc).unwrap();
        let v = serde_json::to_value(a).unwrap();
        let keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(keys, MACHINE_ACTIONS.properties);
        assert_eq!(MACHINES.properties, crate::sim::fleet::KEY_ORDER);
    }

    #[test]
    fn select_names_known_properties_once() {
        let q = parse_query(Some("$select=computerDnsName,id,id"), &MACHINES).unwrap();
        assert_eq!(q.select, Some(vec!["computerDnsName", "id"]));
        assert_eq!(q.select_text.as_deref(), Some("computerDnsName,id,id"));
        assert_eq!(parse_query(Some("$select=*"), &MACHINES).unwrap().select, None);
        let e = parse_query(Some("$select=id,nope"), &MACHINES).unwrap_err();
        assert!(e.0.contains("'nope'") && e.0.contains("PublicMachine"), "{e}");
        assert!(parse_query(Some("$select=ID"), &MACHINES).is_err());
        assert!(parse_query(Some("$select=id,"), &MACHINES).is_err());
        assert!(parse_query(Some("$select=id&$select=id"), &MACHINES).is_err());
        assert_eq!(
            parse_select_only(Some("$top=3&$select=status"), &MACHINE_ACTIONS).unwrap(),
            Some(vec!["status"])
        );
        assert_eq!(projected("Machines", Some(&["id", "lastSeen"])), "Machines(id,lastSeen)");
    }
}
