//! A rule's `match:` compiled into a list of conditions, each able to say in words what it tests, so
//! `explain` can name the first one that failed.

use globset::GlobBuilder;
use regex::Regex;

use super::expr::Expr;
use super::field::{Field, Scope, Slots, Slotted, Val};
use crate::config_raw::{IdOrName, OneOrMany, RawMatch};
use crate::event::Envelope;

/// A literal in a comparison.
#[derive(Debug, Clone, PartialEq)]
pub enum Lit {
    /// `null`.
    Null,
    /// `true`/`false`.
    Bool(bool),
    /// A number.
    Num(f64),
    /// Text.
    Str(String),
}

impl Lit {
    fn from_yaml(v: &serde_yaml::Value) -> Result<Lit, String> {
        Ok(match v {
            serde_yaml::Value::Null => Lit::Null,
            serde_yaml::Value::Bool(b) => Lit::Bool(*b),
            serde_yaml::Value::Number(n) => Lit::Num(n.as_f64().ok_or("number out of range")?),
            serde_yaml::Value::String(s) => Lit::Str(s.clone()),
            _ => return Err("expected a number, text, true/false or null".into()),
        })
    }

    /// Equality, lenient across text and numbers (`"42"` equals `42`), as attribute types vary.
    fn eq(&self, v: Val<'_>) -> bool {
        match (self, v) {
            (Lit::Null, Val::Null) => true,
            (Lit::Bool(a), Val::Bool(b)) => *a == b,
            (Lit::Bool(a), Val::Str(s)) => {
                s.eq_ignore_ascii_case(if *a { "true" } else { "false" })
            }
            (Lit::Num(a), v) => v.as_num() == Some(*a),
            (Lit::Str(a), Val::Str(b)) => a == b,
            (Lit::Str(a), Val::Num(n)) => a.trim().parse::<f64>().ok() == Some(n),
            (Lit::Str(a), Val::Bool(b)) => a.eq_ignore_ascii_case(if b { "true" } else { "false" }),
            _ => false,
        }
    }
}

impl std::fmt::Display for Lit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Lit::Null => f.write_str("null"),
            Lit::Bool(b) => write!(f, "{b}"),
            Lit::Num(n) => write!(f, "{n}"),
            Lit::Str(s) => write!(f, "{s:?}"),
        }
    }
}

/// A comparison of one field.
#[derive(Debug)]
pub enum Op {
    /// Equal.
    Eq(Lit),
    /// Not equal.
    Ne(Lit),
    /// Equal to one of.
    In(Vec<Lit>),
    /// Equal to none of.
    NotIn(Vec<Lit>),
    /// Less than.
    Lt(f64),
    /// Less than or equal.
    Le(f64),
    /// Greater than.
    Gt(f64),
    /// Greater than or equal.
    Ge(f64),
    /// Present and not null (`true`) or absent/null (`false`).
    Exists(bool),
    /// Text matching a regular expression.
    Regex(Regex),
    /// Text matching a glob.
    Glob(Glob),
}

impl Op {
    fn test(&self, v: Val<'_>) -> bool {
        match self {
            Op::Eq(l) => l.eq(v),
            Op::Ne(l) => !l.eq(v),
            Op::In(ls) => ls.iter().any(|l| l.eq(v)),
            Op::NotIn(ls) => !ls.iter().any(|l| l.eq(v)),
            Op::Lt(n) => v.as_num().is_some_and(|x| x < *n),
            Op::Le(n) => v.as_num().is_some_and(|x| x <= *n),
            Op::Gt(n) => v.as_num().is_some_and(|x| x > *n),
            Op::Ge(n) => v.as_num().is_some_and(|x| x >= *n),
            Op::Exists(want) => !matches!(v, Val::Null) == *want,
            Op::Regex(r) => matches!(v, Val::Str(s) if r.is_match(s)),
            Op::Glob(g) => matches!(v, Val::Str(s) if g.is_match(s)),
        }
    }
}

/// One condition of a rule.
#[derive(Debug)]
pub enum Cond {
    /// Event type is one of.
    Type(Vec<String>),
    /// One of the event's alarms is one of.
    Alarm(Vec<String>),
    /// The event's geofence (id or name glob).
    Geofence(Vec<IdOrGlob>),
    /// The device (id or name glob).
    Device(Vec<IdOrGlob>),
    /// The device's unique id (glob).
    UniqueId(Vec<Glob>),
    /// The device's group.
    Group(Vec<i64>),
    /// The device's status.
    Status(Vec<String>),
    /// The source's name.
    Source(Vec<String>),
    /// A field comparison.
    Field(Slotted, Op),
    /// An expression.
    Expr(Expr),
    /// None of the inner conditions may all hold.
    Not(Matcher),
    /// At least one inner matcher holds.
    Any(Vec<Matcher>),
}

/// An id or a compiled name glob.
#[derive(Debug)]
pub enum IdOrGlob {
    /// Numeric id.
    Id(i64),
    /// Name glob.
    Glob(Glob),
}

impl IdOrGlob {
    fn test(&self, id: i64, name: &str) -> bool {
        match self {
            IdOrGlob::Id(i) => *i == id,
            IdOrGlob::Glob(g) => g.is_match(name),
        }
    }
}

/// A condition with its description, as written.
#[derive(Debug)]
pub struct Described {
    /// The condition.
    pub cond: Cond,
    /// What it tests, in the rule's own words (`alarm in [movement, vibration]`).
    pub text: String,
    /// Its slot in the rule set's memo of condition results: rules that state the same condition
    /// share it, so it is tested once per event ([`Matcher::assign_memos`]); [`Described::NO_MEMO`]
    /// when not memoized.
    pub memo: u32,
}

impl Described {
    /// The condition is not memoized.
    pub const NO_MEMO: u32 = u32::MAX;
}

/// Gives every distinct leaf condition of a rule set a memo slot, by its kind and its words.
#[derive(Debug, Default)]
pub struct Memos(std::collections::HashMap<(&'static str, String), u32>);

impl Memos {
    /// How many slots were handed out.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether no slot was handed out.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// A compiled `match:` block: all conditions must hold.
#[derive(Debug, Default)]
pub struct Matcher {
    /// The conditions in the order they are tested.
    pub conds: Vec<Described>,
}

/// Why a condition did not hold, for `explain`.
#[derive(Debug, Clone, PartialEq)]
pub struct Failed {
    /// The condition's description.
    pub condition: String,
    /// An evaluation error, if there was one (an expression over a missing field).
    pub error: Option<String>,
}

impl Matcher {
    /// Compiles a `match:` block; errors name the key they are about. The conditions are tested in
    /// the order of the keys here.
    pub fn compile(mut raw: RawMatch) -> Result<Matcher, String> {
        let mut m = Matcher::default();
        m.words("type", raw.types.take(), Cond::Type);
        m.words("alarm", raw.alarm.take(), Cond::Alarm);
        m.device_conds(&mut raw)?;
        m.words("status", raw.status.take(), Cond::Status);
        m.words("source", raw.source.take(), Cond::Source);
        if let Some(fields) = raw.fields.take() {
            m.field_conds(fields)?;
        }
        m.composed(raw)?;
        Ok(m)
    }

    /// Adds a condition, not memoized (yet).
    fn push(&mut self, cond: Cond, text: String) {
        self.conds.push(Described {
            cond,
            text,
            memo: Described::NO_MEMO,
        })
    }

    /// `key: [a, b]` of plain words (`type`, `alarm`, `status`, `source`): the value is one of them.
    fn words(&mut self, key: &str, list: Option<OneOrMany<String>>, cond: fn(Vec<String>) -> Cond) {
        if let Some(w) = list {
            let w = w.into_vec();
            let text = format!("{key} in [{}]", w.join(", "));
            self.push(cond(w), text);
        }
    }

    /// Which geofence, device (id, name or unique id) and group the event is about.
    fn device_conds(&mut self, raw: &mut RawMatch) -> Result<(), String> {
        if let Some(g) = raw.geofence.take() {
            let (c, text) = ids_or_globs(g.into_vec()).map_err(|e| format!("geofence: {e}"))?;
            self.push(Cond::Geofence(c), format!("geofence in [{text}]"));
        }
        if let Some(d) = raw.device.take() {
            let (c, text) = ids_or_globs(d.into_vec()).map_err(|e| format!("device: {e}"))?;
            self.push(Cond::Device(c), format!("device in [{text}]"));
        }
        if let Some(u) = raw.unique_id.take() {
            let u = u.into_vec();
            let globs = u.iter().map(|p| glob(p)).collect::<Result<_, _>>();
            let globs = globs.map_err(|e| format!("unique_id: {e}"))?;
            self.push(
                Cond::UniqueId(globs),
                format!("unique_id in [{}]", u.join(", ")),
            );
        }
        if let Some(g) = raw.group.take() {
            let g = g.into_vec();
            let text = g.iter().map(i64::to_string).collect::<Vec<_>>().join(", ");
            self.push(Cond::Group(g), format!("group in [{text}]"));
        }
        Ok(())
    }

    /// `where:`: field paths with their operators, one condition per operator.
    fn field_conds(&mut self, fields: serde_yaml::Mapping) -> Result<(), String> {
        for (key, value) in fields {
            let serde_yaml::Value::String(path) = key else {
                return Err("where: keys must be field paths".into());
            };
            let field = Field::parse(&path).map_err(|e| format!("where: {e}"))?;
            for (op, text) in ops(&value).map_err(|e| format!("where `{path}`: {e}"))? {
                self.push(
                    Cond::Field(Slotted::new(field.clone()), op),
                    format!("{path} {text}"),
                );
            }
        }
        Ok(())
    }

    /// `expr:`, `not:` and `any:`: an expression, and matchers within the matcher.
    fn composed(&mut self, raw: RawMatch) -> Result<(), String> {
        if let Some(x) = raw.expr {
            let expr = Expr::compile(&x).map_err(|e| format!("expr: {e}"))?;
            self.push(Cond::Expr(expr), format!("expr `{x}`"));
        }
        if let Some(n) = raw.not {
            let inner = Matcher::compile(*n).map_err(|e| format!("not: {e}"))?;
            let text = format!("not ({})", inner.describe());
            self.push(Cond::Not(inner), text);
        }
        if let Some(any) = raw.any {
            let inner = any
                .into_iter()
                .map(Matcher::compile)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| format!("any: {e}"))?;
            let text = inner
                .iter()
                .map(|m| format!("({})", m.describe()))
                .collect::<Vec<_>>();
            self.push(Cond::Any(inner), format!("any of {}", text.join(" or ")));
        }
        Ok(())
    }

    /// All conditions in words, joined with `and`.
    pub fn describe(&self) -> String {
        if self.conds.is_empty() {
            return "every event".into();
        }
        self.conds
            .iter()
            .map(|c| c.text.as_str())
            .collect::<Vec<_>>()
            .join(" and ")
    }

    /// The event types this matcher is limited to, if its first-level conditions say so.
    pub fn types(&self) -> Option<&[String]> {
        self.conds.iter().find_map(|c| match &c.cond {
            Cond::Type(t) => Some(t.as_slice()),
            _ => None,
        })
    }

    /// Gives every field this matcher reads (nested ones and expression variables too) its slot in a
    /// rule set's [`Scope`].
    pub fn assign_slots(&mut self, slots: &mut Slots) {
        for c in &mut self.conds {
            match &mut c.cond {
                Cond::Field(f, _) => slots.assign(f),
                Cond::Expr(x) => x.assign_slots(slots),
                Cond::Not(m) => m.assign_slots(slots),
                Cond::Any(ms) => ms.iter_mut().for_each(|m| m.assign_slots(slots)),
                _ => {}
            }
        }
    }

    /// Gives this matcher's first-level leaf conditions their memo slots. Two conditions share one
    /// when they are of the same kind and read the same in words: the words name every operand (the
    /// field path, the operator, each literal, glob, pattern or expression as written). Type tests
    /// (answered by the rule set's index), `not` and `any` are not memoized.
    pub fn assign_memos(&mut self, memos: &mut Memos) {
        for c in &mut self.conds {
            let kind = match &c.cond {
                Cond::Type(_) | Cond::Not(_) | Cond::Any(_) => continue,
                Cond::Alarm(_) => "alarm",
                Cond::Geofence(_) => "geofence",
                Cond::Device(_) => "device",
                Cond::UniqueId(_) => "unique_id",
                Cond::Group(_) => "group",
                Cond::Status(_) => "status",
                Cond::Source(_) => "source",
                Cond::Field(..) => "field",
                Cond::Expr(_) => "expr",
            };
            let n = memos.0.len() as u32;
            c.memo = *memos.0.entry((kind, c.text.clone())).or_insert(n);
        }
    }

    /// The memo slot of the first condition [`Matcher::matches_indexed_in`] tests (type tests are
    /// skipped there), or [`Described::NO_MEMO`]: when that condition is remembered false, the matcher
    /// does not match.
    pub fn first_memo(&self) -> u32 {
        self.conds
            .iter()
            .find(|c| !matches!(c.cond, Cond::Type(_)))
            .map_or(Described::NO_MEMO, |c| c.memo)
    }

    /// Whether every condition holds.
    pub fn matches(&self, env: &Envelope, source: &str) -> bool {
        self.matches_in(&mut Scope::new(env, source, 0))
    }

    /// [`Matcher::matches`] reading fields through a scope.
    pub fn matches_in(&self, scope: &mut Scope<'_>) -> bool {
        self.conds
            .iter()
            .all(|c| test(&c.cond, scope).unwrap_or(false))
    }

    /// Whether every condition holds, given that the event's type is already known to be one this
    /// matcher's `type` names (the rule set's index guarantees it): the type test is skipped.
    pub fn matches_indexed(&self, env: &Envelope, source: &str) -> bool {
        self.matches_indexed_in(&mut Scope::new(env, source, 0))
    }

    /// [`Matcher::matches_indexed`] reading fields through a scope.
    pub fn matches_indexed_in(&self, scope: &mut Scope<'_>) -> bool {
        self.conds
            .iter()
            .filter(|c| !matches!(c.cond, Cond::Type(_)))
            .all(|c| match scope.memo(c.memo) {
                Some(known) => known,
                None => {
                    let r = test(&c.cond, scope).unwrap_or(false);
                    scope.remember(c.memo, r);
                    r
                }
            })
    }

    /// The first condition that does not hold, or `None` when the matcher matches.
    pub fn first_failure(&self, env: &Envelope, source: &str) -> Option<Failed> {
        self.first_failure_in(&mut Scope::new(env, source, 0))
    }

    /// [`Matcher::first_failure`] reading fields through a scope.
    pub fn first_failure_in(&self, scope: &mut Scope<'_>) -> Option<Failed> {
        self.conds.iter().find_map(|c| match test(&c.cond, scope) {
            Ok(true) => None,
            Ok(false) => Some(Failed {
                condition: c.text.clone(),
                error: None,
            }),
            Err(e) => Some(Failed {
                condition: c.text.clone(),
                error: Some(e),
            }),
        })
    }
}

fn test(cond: &Cond, scope: &mut Scope<'_>) -> Result<bool, String> {
    let (env, source) = (scope.env, scope.source);
    let device = env.device.as_ref();
    Ok(match cond {
        Cond::Type(t) => t.contains(&env.event.event_type),
        Cond::Alarm(a) => scope.has_alarm(a),
        Cond::Geofence(g) => {
            let id = env.event.geofence_id;
            let name = env.geofence.as_ref().map_or("", |g| g.name.as_str());
            (id != 0 || !name.is_empty()) && g.iter().any(|g| g.test(id, name))
        }
        Cond::Device(d) => {
            let name = device.map_or("", |d| d.name.as_str());
            d.iter().any(|d| d.test(env.device_id(), name))
        }
        Cond::UniqueId(u) => device.is_some_and(|d| u.iter().any(|g| g.is_match(&d.unique_id))),
        Cond::Group(g) => device.is_some_and(|d| g.contains(&d.group_id)),
        Cond::Status(s) => device.is_some_and(|d| s.contains(&d.status)),
        Cond::Source(s) => s.iter().any(|s| s == source),
        Cond::Field(f, op) => op.test(scope.get(f)),
        Cond::Expr(x) => x.eval_in(scope).map_err(|e| e.to_string())?,
        Cond::Not(m) => !m.matches_in(scope),
        Cond::Any(ms) => ms.iter().any(|m| m.matches_in(scope)),
    })
}

/// A case-insensitive name glob. The shapes rules use most (`Lena*`, `*Wien`, an exact name) are plain
/// string comparisons against the pattern lowercased once; anything else goes to globset, which runs a
/// regex per test.
#[derive(Debug)]
pub enum Glob {
    /// No wildcard (ASCII): equal ignoring ASCII case. Held in lower case.
    Exact(String),
    /// `prefix*` (ASCII prefix). Held in lower case.
    Prefix(String),
    /// `*suffix` (ASCII suffix). Held in lower case.
    Suffix(String),
    /// Anything else.
    Pattern(globset::GlobMatcher),
}

impl Glob {
    /// Whether `s` matches.
    pub fn is_match(&self, s: &str) -> bool {
        // `lower` is already lower case: only the subject's bytes need folding.
        fn eq(s: &[u8], lower: &str) -> bool {
            s.len() == lower.len()
                && s.iter()
                    .zip(lower.as_bytes())
                    .all(|(a, b)| a.to_ascii_lowercase() == *b)
        }
        let s = s.as_bytes();
        match self {
            Glob::Exact(p) => eq(s, p),
            Glob::Prefix(p) => s.len() >= p.len() && eq(&s[..p.len()], p),
            Glob::Suffix(p) => s.len() >= p.len() && eq(&s[s.len() - p.len()..], p),
            Glob::Pattern(g) => g.is_match(std::str::from_utf8(s).unwrap_or_default()),
        }
    }
}

fn glob(pattern: &str) -> Result<Glob, String> {
    let special = |c: char| matches!(c, '*' | '?' | '[' | ']' | '{' | '}' | '\\');
    if pattern.is_ascii() && !pattern.is_empty() {
        let inner = |p: &str| !p.is_empty() && !p.contains(special);
        if !pattern.contains(special) {
            return Ok(Glob::Exact(pattern.to_ascii_lowercase()));
        }
        if let Some(p) = pattern.strip_suffix('*').filter(|p| inner(p)) {
            return Ok(Glob::Prefix(p.to_ascii_lowercase()));
        }
        if let Some(p) = pattern.strip_prefix('*').filter(|p| inner(p)) {
            return Ok(Glob::Suffix(p.to_ascii_lowercase()));
        }
    }
    GlobBuilder::new(pattern)
        .case_insensitive(true)
        .literal_separator(false)
        .build()
        .map(|g| Glob::Pattern(g.compile_matcher()))
        .map_err(|e| format!("invalid glob `{pattern}`: {e}"))
}

fn ids_or_globs(items: Vec<IdOrName>) -> Result<(Vec<IdOrGlob>, String), String> {
    let mut out = Vec::new();
    let mut text = Vec::new();
    for item in items {
        match item {
            IdOrName::Id(i) => {
                text.push(i.to_string());
                out.push(IdOrGlob::Id(i));
            }
            IdOrName::Name(n) => {
                out.push(IdOrGlob::Glob(glob(&n)?));
                text.push(format!("{n:?}"));
            }
        }
    }
    Ok((out, text.join(", ")))
}

/// `value` (equals), `[values]` (one of) or `{op: value, ...}`.
fn ops(v: &serde_yaml::Value) -> Result<Vec<(Op, String)>, String> {
    use serde_yaml::Value as Y;
    match v {
        Y::Sequence(items) => {
            let lits = items
                .iter()
                .map(Lit::from_yaml)
                .collect::<Result<Vec<_>, _>>()?;
            let text = lits
                .iter()
                .map(Lit::to_string)
                .collect::<Vec<_>>()
                .join(", ");
            Ok(vec![(Op::In(lits), format!("in [{text}]"))])
        }
        Y::Mapping(m) => {
            let mut out = Vec::new();
            for (k, arg) in m {
                let k = k.as_str().ok_or("operators are names like eq, lt, regex")?;
                out.push(op(k, arg)?);
            }
            if out.is_empty() {
                return Err("no operator given".into());
            }
            Ok(out)
        }
        other => {
            let lit = Lit::from_yaml(other)?;
            Ok(vec![(Op::Eq(lit.clone()), format!("== {lit}"))])
        }
    }
}

fn op(name: &str, arg: &serde_yaml::Value) -> Result<(Op, String), String> {
    let number = || {
        arg.as_f64()
            .ok_or_else(|| format!("`{name}` needs a number"))
    };
    let list = || match arg {
        serde_yaml::Value::Sequence(items) => items
            .iter()
            .map(Lit::from_yaml)
            .collect::<Result<Vec<_>, _>>(),
        _ => Err(format!("`{name}` needs a list")),
    };
    let text = || {
        arg.as_str()
            .map(str::to_string)
            .ok_or_else(|| format!("`{name}` needs text"))
    };
    let join = |ls: &[Lit]| ls.iter().map(Lit::to_string).collect::<Vec<_>>().join(", ");
    Ok(match name {
        "eq" => {
            let l = Lit::from_yaml(arg)?;
            (Op::Eq(l.clone()), format!("== {l}"))
        }
        "ne" => {
            let l = Lit::from_yaml(arg)?;
            (Op::Ne(l.clone()), format!("!= {l}"))
        }
        "in" => {
            let ls = list()?;
            let t = format!("in [{}]", join(&ls));
            (Op::In(ls), t)
        }
        "not_in" => {
            let ls = list()?;
            let t = format!("not in [{}]", join(&ls));
            (Op::NotIn(ls), t)
        }
        "lt" => (Op::Lt(number()?), format!("< {}", number()?)),
        "le" => (Op::Le(number()?), format!("<= {}", number()?)),
        "gt" => (Op::Gt(number()?), format!("> {}", number()?)),
        "ge" => (Op::Ge(number()?), format!(">= {}", number()?)),
        "exists" => {
            let b = arg.as_bool().ok_or("`exists` needs true or false")?;
            (Op::Exists(b), if b { "exists" } else { "does not exist" }.into())
        }
        "regex" => {
            let t = text()?;
            // regex's errors draw a caret diagram over several lines; keep the one that says what is wrong.
            let r = Regex::new(&t).map_err(|e| {
                let e = e.to_string();
                let why = e.lines().last().unwrap_or_default().trim_start_matches("error: ").to_string();
                format!("invalid regex `{t}`: {why}")
            })?;
            (Op::Regex(r), format!("matches /{t}/"))
        }
        "glob" => {
            let t = text()?;
            (Op::Glob(glob(&t)?), format!("matches glob {t:?}"))
        }
        other => {
            return Err(format!(
                "unknown operator `{other}` (use eq, ne, in, not_in, lt, le, gt, ge, exists, regex, glob)"
            ))
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_fast_and_general() {
        let m = |p: &str, s: &str| glob(p).unwrap().is_match(s);
        assert!(matches!(glob("Lena*").unwrap(), Glob::Prefix(_)));
        assert!(matches!(glob("*Wien").unwrap(), Glob::Suffix(_)));
        assert!(matches!(glob("Zuhause Pradl").unwrap(), Glob::Exact(_)));
        assert!(matches!(glob("L?na*").unwrap(), Glob::Pattern(_)));
        assert!(matches!(glob("Straße*").unwrap(), Glob::Pattern(_)));
        assert!(m("lena*", "Lena's Gazelle") && !m("lena*", "Le"));
        assert!(m("*WIEN", "Lastenrad Wien") && !m("*Wien", "Wien!"));
        assert!(m("zuhause pradl", "Zuhause Pradl") && !m("Zuhause", "Zuhause Pradl"));
        assert!(m("L?na*", "Lena") && m("*rad*", "Lastenrad Wien") && m("*", ""));
        assert!(m("Straße*", "straße 5"));
        assert!(glob("[").is_err());
    }
}
