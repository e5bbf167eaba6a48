//! The native event schema as Python describes it.
//!
//! The description is made from the pydantic models, which stay the schema
//! of record (`foreshock.native.description`): every field with its type,
//! whether it may be null, whether it is required, its default and bounds.
//! A value is admitted only if the model would take it with the same
//! value, read strictly: no "200" for 200, no 200.0 for an int, no `true`
//! for 1. Anything else is left to the model, so that a dead letter keeps
//! the model's exact reason.

use std::borrow::Cow;
use std::collections::HashMap;

use serde::Deserialize;
use serde_json::Value;

/// One JSON value as the scanner keeps it, borrowed from the message where
/// it can be.
#[derive(Debug, Clone, PartialEq)]
pub enum Scalar<'a> {
    Null,
    Bool(bool),
    /// A JSON integer that fits an i64.
    Int(i64),
    /// A JSON number written with a fraction or exponent, or an integer too
    /// large for an i64.
    Float(f64),
    Str(Cow<'a, str>),
}

impl Scalar<'_> {
    /// The number, for a test or a measurement.
    pub fn number(&self) -> Option<f64> {
        match self {
            Scalar::Int(i) => Some(*i as f64),
            Scalar::Float(f) => Some(*f),
            _ => None,
        }
    }

    fn from_description(value: &Value) -> Result<Scalar<'static>, String> {
        Ok(match value {
            Value::Null => Scalar::Null,
            Value::Bool(b) => Scalar::Bool(*b),
            Value::Number(n) if !n.is_f64() && n.as_i64().is_some() => {
                Scalar::Int(n.as_i64().unwrap_or_default())
            }
            Value::Number(n) => Scalar::Float(n.as_f64().unwrap_or(f64::NAN)),
            Value::String(s) => Scalar::Str(Cow::Owned(s.clone())),
            other => return Err(format!("no scalar default {other}")),
        })
    }
}

#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum FieldType {
    Str,
    Int,
    Float,
    Bool,
    Literal,
    Enum,
    Time,
    Attributes,
    Payload,
}

#[derive(Debug, Deserialize)]
struct FieldDescription {
    name: String,
    #[serde(rename = "type")]
    kind: FieldType,
    #[serde(default)]
    nullable: bool,
    #[serde(default)]
    required: bool,
    #[serde(default)]
    default: Value,
    ge: Option<f64>,
    le: Option<f64>,
    min_length: Option<usize>,
    max_length: Option<usize>,
    #[serde(default)]
    values: Vec<Value>,
}

#[derive(Debug)]
pub struct FieldSpec {
    pub name: String,
    pub kind: FieldType,
    pub nullable: bool,
    pub required: bool,
    pub default: Scalar<'static>,
    ge: Option<f64>,
    le: Option<f64>,
    min_length: Option<usize>,
    max_length: Option<usize>,
    values: Vec<Scalar<'static>>,
}

impl FieldSpec {
    pub fn parse_all(description: Value) -> Result<Vec<FieldSpec>, String> {
        let fields: Vec<FieldDescription> =
            serde_json::from_value(description).map_err(|e| e.to_string())?;
        fields.into_iter().map(FieldSpec::new).collect()
    }

    fn new(d: FieldDescription) -> Result<Self, String> {
        let values = d
            .values
            .iter()
            .map(Scalar::from_description)
            .collect::<Result<_, _>>()?;
        // Only scalar fields have a default an event can be given.
        let scalar = !matches!(
            d.kind,
            FieldType::Time | FieldType::Attributes | FieldType::Payload
        );
        let default = if scalar {
            Scalar::from_description(&d.default)?
        } else {
            Scalar::Null
        };
        Ok(Self {
            default,
            name: d.name,
            kind: d.kind,
            nullable: d.nullable,
            required: d.required,
            ge: d.ge,
            le: d.le,
            min_length: d.min_length,
            max_length: d.max_length,
            values,
        })
    }

    /// Whether the model takes `value` for this field, as it is. Time,
    /// attributes and the payload are read by their own seeds.
    pub fn admits(&self, value: &Scalar<'_>) -> bool {
        match (self.kind, value) {
            (_, Scalar::Null) => self.nullable,
            (FieldType::Str, Scalar::Str(s)) => self.length_fits(s),
            (FieldType::Int, Scalar::Int(i)) => self.bounds_fit(*i as f64),
            (FieldType::Float, Scalar::Int(_) | Scalar::Float(_)) => {
                value.number().is_some_and(|f| self.bounds_fit(f))
            }
            (FieldType::Bool, Scalar::Bool(_)) => true,
            (FieldType::Literal | FieldType::Enum, _) => self.values.iter().any(|v| v == value),
            _ => false,
        }
    }

    fn length_fits(&self, text: &str) -> bool {
        if self.min_length.is_none() && self.max_length.is_none() {
            return true;
        }
        // Lengths count characters, as Python does, not bytes.
        let length = text.chars().count();
        self.min_length.is_none_or(|m| length >= m) && self.max_length.is_none_or(|m| length <= m)
    }

    fn bounds_fit(&self, number: f64) -> bool {
        self.ge.is_none_or(|ge| number >= ge) && self.le.is_none_or(|le| number <= le)
    }
}

/// The fields of one payload kind.
pub struct KindSpec {
    pub name: String,
    pub fields: Vec<FieldSpec>,
}

impl KindSpec {
    pub fn index(&self, name: &str) -> Option<usize> {
        self.fields.iter().position(|f| f.name == name)
    }
}

pub struct Schema {
    pub envelope: Vec<FieldSpec>,
    pub kinds: Vec<KindSpec>,
    kind_index: HashMap<String, usize>,
}

impl Schema {
    pub fn new(envelope: Vec<FieldSpec>, kinds: Vec<KindSpec>) -> Result<Self, String> {
        for special in ["time", "layer", "service", "payload"] {
            if !envelope.iter().any(|f| f.name == special) {
                return Err(format!("the event schema has no field {special:?}"));
            }
        }
        if envelope.len() > 64 || kinds.iter().any(|k| k.fields.len() > 64) {
            return Err("more than 64 fields in one object".to_owned());
        }
        let kind_index = kinds
            .iter()
            .enumerate()
            .map(|(i, k)| (k.name.clone(), i))
            .collect();
        Ok(Self {
            envelope,
            kinds,
            kind_index,
        })
    }

    pub fn kind(&self, name: &str) -> Option<usize> {
        self.kind_index.get(name).copied()
    }
}
