//! evalexpr expressions in rules (`speed_kmh > 25 && !ignition`): parsed once at load, their variables
//! resolved to [`Field`]s once, and evaluated against a tiny context holding only those variables.
//!
//! Most rule expressions are comparisons of numbers and booleans joined with `&&`, `||` and `!`. Those
//! are also compiled into a `Fast` program that evaluates without allocating; it gives up (and
//! evalexpr evaluates the expression) whenever a value or an operation is outside what it models, so the
//! result, and every error, is evalexpr's own.

use evalexpr::{Context, EvalexprError, EvalexprResult, Node, Operator, Value};

use super::field::{Field, Scope, Slots, Slotted, Val};
use crate::event::Envelope;

/// A compiled expression.
#[derive(Debug)]
pub struct Expr {
    source: String,
    node: Node,
    vars: Vec<(String, Slotted)>,
    fast: Option<Fast>,
}

/// Why an expression does not compile.
#[derive(Debug, thiserror::Error)]
pub enum ExprError {
    /// evalexpr could not parse it.
    #[error("cannot parse expression `{0}`: {1}")]
    Parse(String, EvalexprError),
    /// It names a field that does not exist.
    #[error("in expression `{0}`: {1}")]
    Field(String, super::field::FieldError),
}

impl Expr {
    /// Parses `source` and resolves its variables.
    pub fn compile(source: &str) -> Result<Expr, ExprError> {
        let node = evalexpr::build_operator_tree(source)
            .map_err(|e| ExprError::Parse(source.to_string(), e))?;
        let mut vars: Vec<(String, Slotted)> = Vec::new();
        for name in node.iter_variable_identifiers() {
            if vars.iter().any(|(n, _)| n == name) {
                continue;
            }
            let field = Field::parse(name).map_err(|e| ExprError::Field(source.to_string(), e))?;
            vars.push((name.to_string(), Slotted::new(field)));
        }
        let fast = Fast::compile(&node, &vars);
        Ok(Expr {
            source: source.to_string(),
            node,
            vars,
            fast,
        })
    }

    /// The expression as written.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Gives the variables their slots in a rule set's [`Scope`].
    pub fn assign_slots(&mut self, slots: &mut Slots) {
        for (_, f) in &mut self.vars {
            slots.assign(f);
        }
    }

    /// Evaluates to a boolean. A missing field is evalexpr's empty value, so `!ignition` on an
    /// event without `ignition` is an error, reported as such (and the rule does not match).
    pub fn eval(&self, env: &Envelope, source: &str) -> EvalexprResult<bool> {
        self.eval_in(&mut Scope::new(env, source, 0))
    }

    /// [`Expr::eval`] reading the variables through a scope.
    pub fn eval_in(&self, scope: &mut Scope<'_>) -> EvalexprResult<bool> {
        if let Some(fast) = &self.fast {
            // Up to 8 variables on the stack; more go to evalexpr.
            let mut vals = [None; 8];
            if self.vars.len() <= vals.len() {
                for (slot, (_, f)) in vals.iter_mut().zip(&self.vars) {
                    *slot = Num::of(scope.get(f));
                }
                if let Some(Num::Bool(b)) = fast.run(&vals) {
                    return Ok(b);
                }
            }
        }
        let ctx = VarContext {
            vars: &self.vars,
            values: self
                .vars
                .iter()
                .map(|(_, f)| to_value(scope.get(f)))
                .collect(),
        };
        self.node.eval_boolean_with_context(&ctx)
    }
}

/// A value the fast path models: what [`to_value`] makes of a boolean or a number.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Num {
    Bool(bool),
    Int(i64),
    Float(f64),
}

impl Num {
    /// The value evalexpr would see, if it is one the fast path models (not text, not empty).
    fn of(v: Val<'_>) -> Option<Num> {
        match to_value_num(v)? {
            Value::Boolean(b) => Some(Num::Bool(b)),
            Value::Int(i) => Some(Num::Int(i)),
            Value::Float(f) => Some(Num::Float(f)),
            _ => None,
        }
    }

    fn of_const(v: &Value) -> Option<Num> {
        match v {
            Value::Boolean(b) => Some(Num::Bool(*b)),
            Value::Int(i) => Some(Num::Int(*i)),
            Value::Float(f) => Some(Num::Float(*f)),
            _ => None,
        }
    }

    fn float(self) -> Option<f64> {
        match self {
            Num::Int(i) => Some(i as f64),
            Num::Float(f) => Some(f),
            Num::Bool(_) => None,
        }
    }
}

/// Comparison operators.
#[derive(Debug, Clone, Copy)]
enum Cmp {
    Eq,
    Ne,
    Gt,
    Lt,
    Ge,
    Le,
}

/// An expression over numbers and booleans, evaluated the way evalexpr 11 does (every operand is
/// evaluated, no short circuit); `None` wherever evalexpr would fail or needs a type it leaves out.
#[derive(Debug)]
enum Fast {
    Const(Num),
    Var(usize),
    Not(Box<Fast>),
    Neg(Box<Fast>),
    And(Box<Fast>, Box<Fast>),
    Or(Box<Fast>, Box<Fast>),
    Cmp(Cmp, Box<Fast>, Box<Fast>),
}

impl Fast {
    /// The fast program of a tree, if every operator in it is one the fast path models.
    fn compile(node: &Node, vars: &[(String, Slotted)]) -> Option<Fast> {
        let kids = node.children();
        let one = || match kids {
            [a] => Fast::compile(a, vars).map(Box::new),
            _ => None,
        };
        let two = || match kids {
            [a, b] => Some((
                Box::new(Fast::compile(a, vars)?),
                Box::new(Fast::compile(b, vars)?),
            )),
            _ => None,
        };
        let cmp = |c: Cmp| two().map(|(a, b)| Fast::Cmp(c, a, b));
        match node.operator() {
            Operator::RootNode => one().map(|b| *b),
            Operator::Const { value } if kids.is_empty() => Num::of_const(value).map(Fast::Const),
            Operator::VariableIdentifierRead { identifier } if kids.is_empty() => vars
                .iter()
                .position(|(n, _)| n == identifier)
                .map(Fast::Var),
            Operator::Not => one().map(Fast::Not),
            Operator::Neg => one().map(Fast::Neg),
            Operator::And => two().map(|(a, b)| Fast::And(a, b)),
            Operator::Or => two().map(|(a, b)| Fast::Or(a, b)),
            Operator::Eq => cmp(Cmp::Eq),
            Operator::Neq => cmp(Cmp::Ne),
            Operator::Gt => cmp(Cmp::Gt),
            Operator::Lt => cmp(Cmp::Lt),
            Operator::Geq => cmp(Cmp::Ge),
            Operator::Leq => cmp(Cmp::Le),
            _ => None,
        }
    }

    fn run(&self, vars: &[Option<Num>]) -> Option<Num> {
        Some(match self {
            Fast::Const(n) => *n,
            Fast::Var(i) => (*vars.get(*i)?)?,
            Fast::Not(a) => match a.run(vars)? {
                Num::Bool(b) => Num::Bool(!b),
                _ => return None,
            },
            Fast::Neg(a) => match a.run(vars)? {
                Num::Int(i) => Num::Int(i.checked_neg()?),
                Num::Float(f) => Num::Float(-f),
                Num::Bool(_) => return None,
            },
            Fast::And(a, b) | Fast::Or(a, b) => {
                let (Num::Bool(x), Num::Bool(y)) = (a.run(vars)?, b.run(vars)?) else {
                    return None;
                };
                Num::Bool(if matches!(self, Fast::And(..)) {
                    x && y
                } else {
                    x || y
                })
            }
            Fast::Cmp(c, a, b) => {
                let (x, y) = (a.run(vars)?, b.run(vars)?);
                Num::Bool(match c {
                    // evalexpr compares values: Int(5) is not Float(5.0), a boolean is no number.
                    Cmp::Eq => x == y,
                    Cmp::Ne => x != y,
                    _ => {
                        let o = match (x, y) {
                            (Num::Int(p), Num::Int(q)) => p.partial_cmp(&q),
                            _ => x.float()?.partial_cmp(&y.float()?),
                        };
                        use std::cmp::Ordering::*;
                        match c {
                            Cmp::Gt => o == Some(Greater),
                            Cmp::Lt => o == Some(Less),
                            Cmp::Ge => matches!(o, Some(Greater | Equal)),
                            _ => matches!(o, Some(Less | Equal)),
                        }
                    }
                })
            }
        })
    }
}

fn to_value(v: Val<'_>) -> Value {
    match v {
        Val::Str(s) => Value::String(s.to_string()),
        v => to_value_num(v).unwrap_or(Value::Empty),
    }
}

/// [`to_value`] of everything but text, without allocating.
fn to_value_num(v: Val<'_>) -> Option<Value> {
    Some(match v {
        Val::Null | Val::Other => Value::Empty,
        Val::Bool(b) => Value::Boolean(b),
        // evalexpr's `==` tells Int(5) from Float(5.0): whole numbers become Int so `batteryLevel == 20`
        // means what it says.
        Val::Num(n) if n.fract() == 0.0 && n.abs() < 9.0e15 => Value::Int(n as i64),
        Val::Num(n) => Value::Float(n),
        Val::Str(_) => return None,
    })
}

/// The variables of one evaluation. evalexpr asks by name; there are only a handful, so a linear scan
/// beats hashing.
struct VarContext<'a> {
    vars: &'a [(String, Slotted)],
    values: Vec<Value>,
}

impl Context for VarContext<'_> {
    fn get_value(&self, identifier: &str) -> Option<&Value> {
        let i = self.vars.iter().position(|(n, _)| n == identifier)?;
        self.values.get(i)
    }

    fn call_function(&self, identifier: &str, _argument: &Value) -> EvalexprResult<Value> {
        Err(EvalexprError::FunctionIdentifierNotFound(
            identifier.to_string(),
        ))
    }

    fn are_builtin_functions_disabled(&self) -> bool {
        false
    }

    fn set_builtin_functions_disabled(&mut self, _disabled: bool) -> EvalexprResult<()> {
        Err(EvalexprError::CustomMessage(
            "builtin functions cannot be disabled".into(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(speed_knots: f64, ignition: bool) -> Envelope {
        let body = format!(
            r#"{{"event":{{"id":1,"type":"deviceOverspeed"}},"device":{{"id":3,"name":"Lena's Bike"}},
            "position":{{"speed":{speed_knots},"attributes":{{"ignition":{ignition},"batteryLevel":20}}}}}}"#
        );
        Envelope::from_json(body.as_bytes()).unwrap()
    }

    #[test]
    fn evaluates_against_event_fields() {
        let x = Expr::compile("speed_kmh > 25 && !ignition").unwrap();
        assert!(x.eval(&env(14.0, false), "").unwrap());
        assert!(!x.eval(&env(14.0, true), "").unwrap());
        assert!(!x.eval(&env(10.0, false), "").unwrap());
        let y = Expr::compile("batteryLevel == 20 && str::regex_matches(device.name, \"^Lena\")")
            .unwrap();
        assert!(y.eval(&env(0.0, false), "").unwrap());
    }

    #[test]
    fn missing_field_is_an_error_not_a_match() {
        let x = Expr::compile("!armed").unwrap();
        assert!(x.eval(&env(0.0, false), "").is_err());
    }

    #[test]
    fn fast_path_agrees_with_evalexpr() {
        let sources = [
            "speed_kmh > 25 && !ignition",
            "speed_kmh > 25 || geofence.id > 0",
            "batteryLevel == 20",
            "batteryLevel == 20.0",
            "batteryLevel != 20 || ignition == true",
            "batteryLevel >= 20 && batteryLevel <= 20.5 && -batteryLevel < 0",
            "speed_kmh < 1.5 || armed",
            "!armed",
            "ignition > 1",
            "ignition && 1",
            "device.name == 3",
            "device.name > 3",
            "false && armed",
            "true || armed",
            "",
            "2 > 1",
            "-position.speed >= -10",
        ];
        let events = [env(14.0, false), env(0.0, true), env(20.0, true)];
        for src in sources {
            let x = Expr::compile(src).unwrap();
            for e in &events {
                let ctx = VarContext {
                    vars: &x.vars,
                    values: x
                        .vars
                        .iter()
                        .map(|(_, f)| to_value(f.field.get(e, "")))
                        .collect(),
                };
                let slow = x
                    .node
                    .eval_boolean_with_context(&ctx)
                    .map_err(|e| e.to_string());
                let fast = x.eval(e, "").map_err(|e| e.to_string());
                assert_eq!(fast, slow, "`{src}`");
            }
        }
        assert!(Expr::compile("speed_kmh > 25 && !ignition")
            .unwrap()
            .fast
            .is_some());
        assert!(Expr::compile("str::regex_matches(device.name, \"L\")")
            .unwrap()
            .fast
            .is_none());
    }

    #[test]
    fn bad_expressions_are_rejected_at_compile() {
        assert!(matches!(
            Expr::compile("(speed_kmh > 3"),
            Err(ExprError::Parse(..))
        ));
        assert!(matches!(
            Expr::compile("vehicle.speed > 3"),
            Err(ExprError::Field(..))
        ));
    }
}
