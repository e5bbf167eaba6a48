//! Native messages read straight into checked events, without a JSON tree.
//!
//! serde_json streams the message and each seed here checks what it reads
//! against the schema as it goes, borrowing strings from the message where
//! they have no escapes: an event costs no allocation beyond its list of
//! payload fields. A message is one event (an object) or a non-empty array
//! of them; anything the schema does not admit, a key given twice, or
//! trailing data refuses the whole message, which then goes to the model.

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use serde_json::value::RawValue;
use smallvec::SmallVec;

use crate::schema::{FieldSpec, FieldType, Scalar, Schema};
use crate::time::{number_micros, text_micros};

/// An event the schema took: what its window needs, and where its
/// payload's fields are in the message's `Parsed::fields`, in the kind's
/// field order (the default where it left one out).
pub struct Checked<'a> {
    pub t_us: i64,
    pub layer: Cow<'a, str>,
    pub service: Cow<'a, str>,
    pub kind: usize,
    pub start: usize,
}

/// The events of one message, and the payload fields of them all in one
/// list, so that an event costs no allocation of its own.
#[derive(Default)]
pub struct Parsed<'a> {
    pub events: Vec<Checked<'a>>,
    pub fields: Vec<Scalar<'a>>,
}

impl<'a> Parsed<'a> {
    pub fn fields_of(&self, event: &Checked<'a>, count: usize) -> &[Scalar<'a>] {
        &self.fields[event.start..event.start + count]
    }
}

/// The events of a message, if the schema takes every one of them.
pub fn message<'a>(schema: &'a Schema, data: &'a [u8]) -> Option<Parsed<'a>> {
    // Checked once here, strings need no check of their own as they are read.
    let text = std::str::from_utf8(data).ok()?;
    let mut reader = serde_json::Deserializer::from_str(text);
    let mut parsed = Parsed::default();
    MessageSeed {
        schema,
        parsed: &mut parsed,
    }
    .deserialize(&mut reader)
    .ok()?;
    reader.end().ok()?;
    (!parsed.events.is_empty()).then_some(parsed)
}

fn refused<E: de::Error>() -> E {
    E::custom("left to the model")
}

struct MessageSeed<'a, 'p> {
    schema: &'a Schema,
    parsed: &'p mut Parsed<'a>,
}

impl<'a> DeserializeSeed<'a> for MessageSeed<'a, '_> {
    type Value = ();

    fn deserialize<D: Deserializer<'a>>(self, reader: D) -> Result<Self::Value, D::Error> {
        reader.deserialize_any(self)
    }
}

impl<'a> Visitor<'a> for MessageSeed<'a, '_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an event or an array of events")
    }

    fn visit_seq<A: SeqAccess<'a>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let (schema, parsed) = (self.schema, self.parsed);
        loop {
            let seed = EventSeed {
                schema,
                fields: &mut parsed.fields,
            };
            match seq.next_element_seed(seed)? {
                Some(event) => parsed.events.push(event),
                None => return Ok(()),
            }
        }
    }

    fn visit_map<A: MapAccess<'a>>(self, map: A) -> Result<Self::Value, A::Error> {
        let seed = EventSeed {
            schema: self.schema,
            fields: &mut self.parsed.fields,
        };
        let event = seed.visit_map(map)?;
        self.parsed.events.push(event);
        Ok(())
    }
}

struct EventSeed<'a, 'p> {
    schema: &'a Schema,
    fields: &'p mut Vec<Scalar<'a>>,
}

impl<'a> DeserializeSeed<'a> for EventSeed<'a, '_> {
    type Value = Checked<'a>;

    fn deserialize<D: Deserializer<'a>>(self, reader: D) -> Result<Self::Value, D::Error> {
        reader.deserialize_map(self)
    }
}

impl<'a> Visitor<'a> for EventSeed<'a, '_> {
    type Value = Checked<'a>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an event")
    }

    fn visit_map<A: MapAccess<'a>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let envelope = &self.schema.envelope;
        let mut seen = 0u64;
        let mut t_us = None;
        let mut layer = None;
        let mut service = None;
        let mut payload = None;
        while let Some(at) = map.next_key_seed(FieldSeed { fields: envelope })? {
            if seen & (1 << at) != 0 {
                return Err(refused());
            }
            seen |= 1 << at;
            let spec = &envelope[at];
            match spec.kind {
                FieldType::Time => t_us = Some(map.next_value_seed(TimeSeed)?),
                FieldType::Payload => {
                    let seed = PayloadSeed {
                        schema: self.schema,
                        fields: &mut *self.fields,
                    };
                    payload = Some(map.next_value_seed(seed)?);
                }
                FieldType::Attributes => map.next_value_seed(AttributesSeed)?,
                _ => {
                    let value = map.next_value_seed(ScalarSeed)?;
                    if !spec.admits(&value) {
                        return Err(refused());
                    }
                    match (spec.name.as_str(), value) {
                        ("layer", Scalar::Str(text)) => layer = Some(text),
                        ("service", Scalar::Str(text)) => service = Some(text),
                        _ => {}
                    }
                }
            }
        }
        let missing = envelope
            .iter()
            .enumerate()
            .any(|(i, f)| f.required && seen & (1 << i) == 0);
        if missing {
            return Err(refused());
        }
        let (kind, start) = payload.ok_or_else(refused)?;
        Ok(Checked {
            t_us: t_us.ok_or_else(refused)?,
            layer: layer.ok_or_else(refused)?,
            service: service.ok_or_else(refused)?,
            kind,
            start,
        })
    }
}

/// A payload, its fields appended to the message's list: (its kind, where
/// its fields start).
struct PayloadSeed<'a, 'p> {
    schema: &'a Schema,
    fields: &'p mut Vec<Scalar<'a>>,
}

impl<'a> DeserializeSeed<'a> for PayloadSeed<'a, '_> {
    type Value = (usize, usize);

    fn deserialize<D: Deserializer<'a>>(self, reader: D) -> Result<Self::Value, D::Error> {
        reader.deserialize_map(self)
    }
}

impl<'a> Visitor<'a> for PayloadSeed<'a, '_> {
    type Value = (usize, usize);

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a payload")
    }

    fn visit_map<A: MapAccess<'a>>(mut self, mut map: A) -> Result<Self::Value, A::Error> {
        // Producers mostly write the kind first: then each field is checked
        // as it comes. Otherwise the fields wait for the kind.
        let mut given: SmallVec<[(Cow<'a, str>, Scalar<'a>); 12]> = SmallVec::new();
        let mut payload = None;
        while let Some(key) = map.next_key_seed(KeySeed)? {
            let value = map.next_value_seed(ScalarSeed)?;
            if key != "kind" {
                match payload.as_mut() {
                    Some(payload) => self.add(payload, &key, value)?,
                    None => given.push((key, value)),
                }
                continue;
            }
            let Scalar::Str(name) = value else {
                return Err(refused());
            };
            if payload.is_some() {
                return Err(refused());
            }
            let mut started = self.start(&name)?;
            for (key, value) in given.drain(..) {
                self.add(&mut started, &key, value)?;
            }
            payload = Some(started);
        }
        let payload = payload.ok_or_else(refused)?;
        let spec = &self.schema.kinds[payload.kind];
        let missing = spec
            .fields
            .iter()
            .enumerate()
            .any(|(i, f)| f.required && payload.seen & (1 << i) == 0);
        if missing {
            return Err(refused());
        }
        Ok((payload.kind, payload.start))
    }
}

/// A payload being read: its kind, where its fields start, which were given.
struct Payload {
    kind: usize,
    start: usize,
    seen: u64,
}

impl<'a> PayloadSeed<'a, '_> {
    fn start<E: de::Error>(&mut self, kind: &str) -> Result<Payload, E> {
        let kind = self.schema.kind(kind).ok_or_else(refused)?;
        let start = self.fields.len();
        let defaults = self.schema.kinds[kind]
            .fields
            .iter()
            .map(|f| borrowed(&f.default));
        self.fields.extend(defaults);
        Ok(Payload {
            kind,
            start,
            seen: 0,
        })
    }

    fn add<E: de::Error>(
        &mut self,
        payload: &mut Payload,
        key: &str,
        value: Scalar<'a>,
    ) -> Result<(), E> {
        let spec = &self.schema.kinds[payload.kind];
        let at = spec
            .fields
            .iter()
            .position(|f| same_name(&f.name, key))
            .ok_or_else(refused)?;
        if payload.seen & (1 << at) != 0 || !spec.fields[at].admits(&value) {
            return Err(refused());
        }
        payload.seen |= 1 << at;
        self.fields[payload.start + at] = value;
        Ok(())
    }
}

/// Names compared by length and first byte before their bytes: most
/// candidates differ there, and a call to compare costs more than that.
fn same_name(name: &str, key: &str) -> bool {
    name.len() == key.len() && name.as_bytes().first() == key.as_bytes().first() && name == key
}

/// A default, lent to an event instead of copied.
fn borrowed<'a>(default: &'a Scalar<'static>) -> Scalar<'a> {
    match default {
        Scalar::Str(text) => Scalar::Str(Cow::Borrowed(text.as_ref())),
        other => other.clone(),
    }
}

/// A key known to `fields`, as its index there; any other key is refused.
struct FieldSeed<'s> {
    fields: &'s [FieldSpec],
}

impl<'a> DeserializeSeed<'a> for FieldSeed<'_> {
    type Value = usize;

    fn deserialize<D: Deserializer<'a>>(self, reader: D) -> Result<Self::Value, D::Error> {
        reader.deserialize_str(self)
    }
}

impl<'a> Visitor<'a> for FieldSeed<'_> {
    type Value = usize;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a field name")
    }

    fn visit_str<E: de::Error>(self, text: &str) -> Result<Self::Value, E> {
        self.fields
            .iter()
            .position(|f| same_name(&f.name, text))
            .ok_or_else(refused)
    }
}

/// A key, borrowed from the message unless it has escapes.
struct KeySeed;

impl<'a> DeserializeSeed<'a> for KeySeed {
    type Value = Cow<'a, str>;

    fn deserialize<D: Deserializer<'a>>(self, reader: D) -> Result<Self::Value, D::Error> {
        reader.deserialize_str(self)
    }
}

impl<'a> Visitor<'a> for KeySeed {
    type Value = Cow<'a, str>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a key")
    }

    fn visit_borrowed_str<E: de::Error>(self, text: &'a str) -> Result<Self::Value, E> {
        Ok(Cow::Borrowed(text))
    }

    fn visit_str<E: de::Error>(self, text: &str) -> Result<Self::Value, E> {
        Ok(Cow::Owned(text.to_owned()))
    }
}

/// A scalar value, read from its JSON text; an object or array is refused.
struct ScalarSeed;

impl<'a> DeserializeSeed<'a> for ScalarSeed {
    type Value = Scalar<'a>;

    fn deserialize<D: Deserializer<'a>>(self, reader: D) -> Result<Self::Value, D::Error> {
        let raw: &'a RawValue = Deserialize::deserialize(reader)?;
        scalar(raw.get()).ok_or_else(refused)
    }
}

/// The scalar of a JSON value's text (valid JSON, as serde_json checked).
///
/// Numbers are read by Rust's own parsers, which round correctly however
/// many digits there are, as Python does; serde_json's float reading only
/// promises to read back what it writes. A number beyond the finite floats
/// is left to the model.
fn scalar(text: &str) -> Option<Scalar<'_>> {
    Some(match text.as_bytes().first()? {
        b'"' => {
            let inner = &text[1..text.len() - 1];
            if inner.contains('\\') {
                Scalar::Str(Cow::Owned(serde_json::from_str::<String>(text).ok()?))
            } else {
                Scalar::Str(Cow::Borrowed(inner))
            }
        }
        b't' => Scalar::Bool(true),
        b'f' => Scalar::Bool(false),
        b'n' => Scalar::Null,
        b'{' | b'[' => return None,
        _ if text.bytes().all(|b| b.is_ascii_digit() || b == b'-') => match text.parse::<i64>() {
            Ok(integer) => Scalar::Int(integer),
            Err(_) => Scalar::Float(finite(text)?),
        },
        _ => Scalar::Float(finite(text)?),
    })
}

fn finite(text: &str) -> Option<f64> {
    text.parse::<f64>().ok().filter(|f| f.is_finite())
}

/// An event time in microseconds (see `crate::time`).
struct TimeSeed;

impl<'a> DeserializeSeed<'a> for TimeSeed {
    type Value = i64;

    fn deserialize<D: Deserializer<'a>>(self, reader: D) -> Result<Self::Value, D::Error> {
        reader.deserialize_any(self)
    }
}

impl<'a> Visitor<'a> for TimeSeed {
    type Value = i64;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an event time")
    }

    fn visit_i64<E: de::Error>(self, value: i64) -> Result<Self::Value, E> {
        number_micros(value).ok_or_else(refused)
    }

    fn visit_u64<E: de::Error>(self, value: u64) -> Result<Self::Value, E> {
        i64::try_from(value)
            .ok()
            .and_then(number_micros)
            .ok_or_else(refused)
    }

    fn visit_str<E: de::Error>(self, text: &str) -> Result<Self::Value, E> {
        text_micros(text).ok_or_else(refused)
    }
}

/// Attributes: an object of strings, numbers and booleans, checked and
/// dropped (no KPI reads them).
struct AttributesSeed;

impl<'a> DeserializeSeed<'a> for AttributesSeed {
    type Value = ();

    fn deserialize<D: Deserializer<'a>>(self, reader: D) -> Result<Self::Value, D::Error> {
        reader.deserialize_map(self)
    }
}

impl<'a> Visitor<'a> for AttributesSeed {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("attributes")
    }

    fn visit_map<A: MapAccess<'a>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        while map.next_key::<IgnoredAny>()?.is_some() {
            if map.next_value_seed(ScalarSeed)? == Scalar::Null {
                return Err(refused());
            }
        }
        Ok(())
    }
}
