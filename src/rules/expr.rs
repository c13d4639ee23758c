//! evalexpr expressions in rules (`speed_kmh > 25 && !ignition`): parsed once at load, their variables
//! resolved to [`Field`]s once, and evaluated against a tiny context holding only those variables.

use evalexpr::{Context, EvalexprError, EvalexprResult, Node, Value};

use super::field::{Field, Val};
use crate::event::Envelope;

/// A compiled expression.
#[derive(Debug)]
pub struct Expr {
    source: String,
    node: Node,
    vars: Vec<(String, Field)>,
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
        let mut vars: Vec<(String, Field)> = Vec::new();
        for name in node.iter_variable_identifiers() {
            if vars.iter().any(|(n, _)| n == name) {
                continue;
            }
            let field = Field::parse(name).map_err(|e| ExprError::Field(source.to_string(), e))?;
            vars.push((name.to_string(), field));
        }
        Ok(Expr {
            source: source.to_string(),
            node,
            vars,
        })
    }

    /// The expression as written.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Evaluates to a boolean. A missing field is evalexpr's empty value, so `!ignition` on an
    /// event without `ignition` is an error, reported as such (and the rule does not match).
    pub fn eval(&self, env: &Envelope, source: &str) -> EvalexprResult<bool> {
        let ctx = VarContext {
            vars: &self.vars,
            values: self
                .vars
                .iter()
                .map(|(_, f)| to_value(f.get(env, source)))
                .collect(),
        };
        self.node.eval_boolean_with_context(&ctx)
    }
}

fn to_value(v: Val<'_>) -> Value {
    match v {
        Val::Null | Val::Other => Value::Empty,
        Val::Bool(b) => Value::Boolean(b),
        // evalexpr's `==` tells Int(5) from Float(5.0): whole numbers become Int so `batteryLevel == 20`
        // means what it says.
        Val::Num(n) if n.fract() == 0.0 && n.abs() < 9.0e15 => Value::Int(n as i64),
        Val::Num(n) => Value::Float(n),
        Val::Str(s) => Value::String(s.to_string()),
    }
}

/// The variables of one evaluation. evalexpr asks by name; there are only a handful, so a linear scan
/// beats hashing.
struct VarContext<'a> {
    vars: &'a [(String, Field)],
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
