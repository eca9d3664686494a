//! Request decoding: JSON, or JSON followed by Triton's binary tensor data.
//!
//! The JSON is parsed once. Each input's `data` is kept as raw text until its declared shape has
//! been checked (rank, overflow, element cap), then flattened straight into a typed `Vec` of
//! exactly that capacity: no intermediate `serde_json::Value` per element, and a body that claims
//! a huge shape is refused before anything is allocated for it.

use std::{collections::BTreeMap, fmt};

use half::{bf16, f16};
use serde::{
    Deserialize, Deserializer,
    de::{self, DeserializeSeed, SeqAccess, Visitor},
};
use serde_json::value::RawValue;

use super::{DataType, InferRequest, Limits, Parameter, RequestedOutput, Tensor, TensorData};

/// Why a request body cannot be decoded. The message is safe and precise: it names the input,
/// the element or the byte offset at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct DecodeError(pub String);

fn error(message: impl Into<String>) -> DecodeError {
    DecodeError(message.into())
}

#[derive(Deserialize)]
struct WireRequest<'a> {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    parameters: Option<BTreeMap<String, Parameter>>,
    #[serde(borrow)]
    inputs: Vec<WireInput<'a>>,
    #[serde(default)]
    outputs: Option<Vec<WireOutput>>,
}

#[derive(Deserialize)]
struct WireInput<'a> {
    name: String,
    shape: Vec<u64>,
    datatype: String,
    #[serde(default)]
    parameters: Option<BTreeMap<String, Parameter>>,
    #[serde(borrow, default)]
    data: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct WireOutput {
    name: String,
    #[serde(default)]
    parameters: Option<BTreeMap<String, Parameter>>,
}

impl<'de> Deserialize<'de> for Parameter {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ParameterVisitor;
        impl<'de> Visitor<'de> for ParameterVisitor {
            type Value = Parameter;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a parameter value that is a string, a number or a boolean")
            }
            fn visit_bool<E: de::Error>(self, value: bool) -> Result<Parameter, E> {
                Ok(Parameter::Bool(value))
            }
            fn visit_i64<E: de::Error>(self, value: i64) -> Result<Parameter, E> {
                Ok(Parameter::Int(value))
            }
            fn visit_u64<E: de::Error>(self, value: u64) -> Result<Parameter, E> {
                i64::try_from(value).map(Parameter::Int).map_err(|_| E::custom("parameter value is out of range"))
            }
            fn visit_f64<E: de::Error>(self, value: f64) -> Result<Parameter, E> {
                Ok(Parameter::Float(value))
            }
            fn visit_str<E: de::Error>(self, value: &str) -> Result<Parameter, E> {
                Ok(Parameter::String(value.to_owned()))
            }
        }
        deserializer.deserialize_any(ParameterVisitor)
    }
}

/// Decodes an inference request. `json_len` is the `Inference-Header-Content-Length` header:
/// when present, the body is that many bytes of JSON followed by binary tensor data.
pub fn decode_request(body: &[u8], json_len: Option<usize>, limits: &Limits) -> Result<InferRequest, DecodeError> {
    let (json, binary) = split_body(body, json_len)?;
    let wire: WireRequest<'_> =
        serde_json::from_slice(json).map_err(|e| error(format!("invalid inference request JSON: {e}")))?;
    if let Some(id) = &wire.id
        && id.len() > limits.max_name_len
    {
        return Err(error(format!("id is longer than {} bytes", limits.max_name_len)));
    }
    if wire.inputs.is_empty() {
        return Err(error("inputs is empty: a request needs at least one input"));
    }
    if wire.inputs.len() > limits.max_tensors {
        return Err(error(format!("{} inputs, more than the limit of {}", wire.inputs.len(), limits.max_tensors)));
    }
    let request_parameters = wire.parameters.unwrap_or_default();
    check_parameter_count(&request_parameters, "the request", limits)?;
    let binary_output_default = bool_parameter(&request_parameters, "binary_data_output", "the request")?;

    let inputs = decode_tensors(wire.inputs, binary, limits)?;

    let wire_outputs = wire.outputs.unwrap_or_default();
    if wire_outputs.len() > limits.max_tensors {
        return Err(error(format!(
            "{} outputs requested, more than the limit of {}",
            wire_outputs.len(),
            limits.max_tensors
        )));
    }
    let mut outputs = Vec::with_capacity(wire_outputs.len());
    for output in wire_outputs {
        let parameters = output.parameters.unwrap_or_default();
        check_parameter_count(&parameters, &output.name, limits)?;
        if parameters.contains_key("classification") {
            return Err(error(format!("output '{}': the classification extension is not supported", output.name)));
        }
        let binary = match parameters.get("binary_data") {
            None => binary_output_default,
            Some(_) => bool_parameter(&parameters, "binary_data", &output.name)?,
        };
        outputs.push(RequestedOutput { name: output.name, binary });
    }
    Ok(InferRequest { id: wire.id, inputs, outputs, binary_output_default })
}

/// Splits a body into its JSON part and the binary tensor data after it.
fn split_body(body: &[u8], json_len: Option<usize>) -> Result<(&[u8], &[u8]), DecodeError> {
    match json_len {
        None => Ok((body, &[][..])),
        Some(len) if len <= body.len() => Ok(body.split_at(len)),
        Some(len) => {
            Err(error(format!("Inference-Header-Content-Length is {len}, but the body has only {} bytes", body.len())))
        }
    }
}

/// Decodes tensors (request inputs or response outputs): each named once, a known datatype, a
/// shape within the limits, and data either inline or in the binary part, which must be used up.
fn decode_tensors(wire: Vec<WireInput<'_>>, mut binary: &[u8], limits: &Limits) -> Result<Vec<Tensor>, DecodeError> {
    let mut inputs = Vec::with_capacity(wire.len());
    for input in wire {
        let parameters = input.parameters.unwrap_or_default();
        check_parameter_count(&parameters, &input.name, limits)?;
        let name = input.name;
        if name.is_empty() || name.len() > limits.max_name_len {
            return Err(error(format!("input names must be 1 to {} bytes long", limits.max_name_len)));
        }
        let datatype = DataType::parse(&input.datatype).ok_or_else(|| {
            error(format!(
                "input '{name}': unknown datatype '{}'; use one of {}",
                input.datatype,
                DataType::ALL.map(DataType::as_str).join(", ")
            ))
        })?;
        let elements = element_count(&name, &input.shape, limits)?;
        let data = match (binary_size(&parameters, &name)?, input.data) {
            (Some(_), Some(_)) => {
                return Err(error(format!("input '{name}' has both data and binary_data_size; give one")));
            }
            (None, None) => return Err(error(format!("input '{name}' has no data"))),
            (None, Some(raw)) => decode_json_data(&name, datatype, elements, raw, limits)?,
            (Some(size), None) => {
                if size > binary.len() {
                    return Err(error(format!(
                        "input '{name}' has binary_data_size {size}, but only {} bytes of binary data remain",
                        binary.len()
                    )));
                }
                let (bytes, rest) = binary.split_at(size);
                binary = rest;
                decode_binary_data(&name, datatype, elements, bytes, limits)?
            }
        };
        inputs.push(Tensor { name, shape: input.shape, data });
    }
    if !binary.is_empty() {
        return Err(error(format!("{} bytes of binary data are not claimed by any input", binary.len())));
    }
    Ok(inputs)
}

#[derive(Deserialize)]
struct WireResponse<'a> {
    #[serde(borrow)]
    outputs: Vec<WireInput<'a>>,
}

/// Decodes an inference response from another OIP server (an upstream), under the same limits
/// as a request: its outputs, in its order. Fields other than `outputs` are not needed.
pub fn decode_response(body: &[u8], json_len: Option<usize>, limits: &Limits) -> Result<Vec<Tensor>, DecodeError> {
    let (json, binary) = split_body(body, json_len)?;
    let wire: WireResponse<'_> =
        serde_json::from_slice(json).map_err(|e| error(format!("invalid inference response JSON: {e}")))?;
    if wire.outputs.len() > limits.max_tensors {
        return Err(error(format!("{} outputs, more than the limit of {}", wire.outputs.len(), limits.max_tensors)));
    }
    decode_tensors(wire.outputs, binary, limits).map_err(|e| error(format!("in the outputs: {e}")))
}

fn check_parameter_count(
    parameters: &BTreeMap<String, Parameter>,
    owner: &str,
    limits: &Limits,
) -> Result<(), DecodeError> {
    if parameters.len() > limits.max_parameters {
        return Err(error(format!("{owner} has more than {} parameters", limits.max_parameters)));
    }
    Ok(())
}

fn bool_parameter(parameters: &BTreeMap<String, Parameter>, key: &str, owner: &str) -> Result<bool, DecodeError> {
    match parameters.get(key) {
        None => Ok(false),
        Some(Parameter::Bool(value)) => Ok(*value),
        Some(_) => Err(error(format!("{owner}: parameter {key} must be true or false"))),
    }
}

fn binary_size(parameters: &BTreeMap<String, Parameter>, name: &str) -> Result<Option<usize>, DecodeError> {
    match parameters.get("binary_data_size") {
        None => Ok(None),
        Some(Parameter::Int(size)) => usize::try_from(*size)
            .map(Some)
            .map_err(|_| error(format!("input '{name}': binary_data_size must not be negative"))),
        Some(_) => Err(error(format!("input '{name}': binary_data_size must be an integer"))),
    }
}

/// The product of a shape, refused if it overflows or passes the element cap.
fn element_count(name: &str, shape: &[u64], limits: &Limits) -> Result<usize, DecodeError> {
    if shape.len() > limits.max_rank {
        return Err(error(format!(
            "input '{name}' has {} dimensions, more than the limit of {}",
            shape.len(),
            limits.max_rank
        )));
    }
    let product = shape.iter().try_fold(1u64, |product, &dim| product.checked_mul(dim));
    match product {
        None => Err(error(format!("input '{name}': the product of shape {shape:?} overflows"))),
        Some(count) if count > limits.max_tensor_elements => Err(error(format!(
            "input '{name}' has {count} elements, more than the limit of {}",
            limits.max_tensor_elements
        ))),
        // The cap is far below usize::MAX on every supported platform.
        Some(count) => usize::try_from(count).map_err(|_| error(format!("input '{name}' is too large"))),
    }
}

// ---------------------------------------------------------------------------------------------
// JSON data: nested or flat arrays, flattened into a typed vector.

/// One JSON scalar, before conversion to the tensor's datatype.
enum Scalar<'a> {
    Bool(bool),
    Int(i64),
    Uint(u64),
    Float(f64),
    Str(&'a str),
}

impl Scalar<'_> {
    fn describe(&self) -> String {
        match self {
            Scalar::Bool(value) => format!("the boolean {value}"),
            Scalar::Int(value) => format!("the integer {value}"),
            Scalar::Uint(value) => format!("the integer {value}"),
            Scalar::Float(value) => format!("the number {value}"),
            Scalar::Str(_) => "a string".to_owned(),
        }
    }
}

/// A tensor element type that JSON scalars convert into.
trait Element: Sized {
    const DATATYPE: DataType;
    fn from_scalar(scalar: Scalar<'_>, limits: &Limits) -> Result<Self, String>;
}

fn mismatch(datatype: DataType, scalar: &Scalar<'_>) -> String {
    format!("expected a {} value, found {}", datatype.as_str(), scalar.describe())
}

impl Element for bool {
    const DATATYPE: DataType = DataType::Bool;
    fn from_scalar(scalar: Scalar<'_>, _: &Limits) -> Result<Self, String> {
        match scalar {
            Scalar::Bool(value) => Ok(value),
            other => Err(mismatch(Self::DATATYPE, &other)),
        }
    }
}

macro_rules! integer_element {
    ($($ty:ty => $datatype:ident),*) => {$(
        impl Element for $ty {
            const DATATYPE: DataType = DataType::$datatype;
            fn from_scalar(scalar: Scalar<'_>, _: &Limits) -> Result<Self, String> {
                let converted = match scalar {
                    Scalar::Int(value) => <$ty>::try_from(value).ok(),
                    Scalar::Uint(value) => <$ty>::try_from(value).ok(),
                    other => return Err(mismatch(Self::DATATYPE, &other)),
                };
                converted.ok_or_else(|| format!("value out of range for {}", Self::DATATYPE.as_str()))
            }
        }
    )*};
}
integer_element!(u8 => Uint8, u16 => Uint16, u32 => Uint32, u64 => Uint64, i8 => Int8, i16 => Int16, i32 => Int32, i64 => Int64);

/// Any JSON number as f64 (integers beyond 2^53 round, as they would in any JSON client).
fn number(datatype: DataType, scalar: Scalar<'_>) -> Result<f64, String> {
    #[expect(clippy::cast_precision_loss, reason = "JSON numbers are f64 by nature")]
    match scalar {
        Scalar::Float(value) => Ok(value),
        Scalar::Int(value) => Ok(value as f64),
        Scalar::Uint(value) => Ok(value as f64),
        other => Err(mismatch(datatype, &other)),
    }
}

/// Narrows a finite f64; a value that becomes infinite is out of range, not silently inf.
fn narrow<T>(
    datatype: DataType,
    value: f64,
    convert: impl Fn(f64) -> T,
    finite: impl Fn(&T) -> bool,
) -> Result<T, String> {
    let narrowed = convert(value);
    if value.is_finite() && !finite(&narrowed) {
        return Err(format!("value {value} is out of range for {}", datatype.as_str()));
    }
    Ok(narrowed)
}

impl Element for f32 {
    const DATATYPE: DataType = DataType::Fp32;
    fn from_scalar(scalar: Scalar<'_>, _: &Limits) -> Result<Self, String> {
        #[expect(clippy::cast_possible_truncation, reason = "range is checked by narrow")]
        narrow(Self::DATATYPE, number(Self::DATATYPE, scalar)?, |value| value as f32, |value| value.is_finite())
    }
}

impl Element for f64 {
    const DATATYPE: DataType = DataType::Fp64;
    fn from_scalar(scalar: Scalar<'_>, _: &Limits) -> Result<Self, String> {
        number(Self::DATATYPE, scalar)
    }
}

impl Element for f16 {
    const DATATYPE: DataType = DataType::Fp16;
    fn from_scalar(scalar: Scalar<'_>, _: &Limits) -> Result<Self, String> {
        narrow(Self::DATATYPE, number(Self::DATATYPE, scalar)?, f16::from_f64, |value| value.is_finite())
    }
}

impl Element for bf16 {
    const DATATYPE: DataType = DataType::Bf16;
    fn from_scalar(scalar: Scalar<'_>, _: &Limits) -> Result<Self, String> {
        narrow(Self::DATATYPE, number(Self::DATATYPE, scalar)?, bf16::from_f64, |value| value.is_finite())
    }
}

impl Element for Vec<u8> {
    const DATATYPE: DataType = DataType::Bytes;
    fn from_scalar(scalar: Scalar<'_>, limits: &Limits) -> Result<Self, String> {
        match scalar {
            Scalar::Str(text) if text.len() <= limits.max_bytes_element => Ok(text.as_bytes().to_vec()),
            Scalar::Str(text) => {
                Err(format!("element of {} bytes is longer than the limit of {}", text.len(), limits.max_bytes_element))
            }
            other => Err(mismatch(Self::DATATYPE, &other)),
        }
    }
}

struct Flatten<'l, T> {
    out: Vec<T>,
    expected: usize,
    limits: &'l Limits,
}

/// Deserializes one level of `data`: an array (recursing) or, below the top, a scalar.
struct FlattenSeed<'s, 'l, T> {
    state: &'s mut Flatten<'l, T>,
    depth: usize,
}

impl<'de, T: Element> DeserializeSeed<'de> for FlattenSeed<'_, '_, T> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<T: Element> FlattenSeed<'_, '_, T> {
    fn push<E: de::Error>(self, scalar: Scalar<'_>) -> Result<(), E> {
        if self.depth == 0 {
            return Err(E::custom("data must be an array"));
        }
        let index = self.state.out.len();
        if index >= self.state.expected {
            return Err(E::custom(format!("data has more elements than the shape's {}", self.state.expected)));
        }
        let value = T::from_scalar(scalar, self.state.limits)
            .map_err(|message| E::custom(format!("element {index}: {message}")))?;
        self.state.out.push(value);
        Ok(())
    }
}

impl<'de, T: Element> Visitor<'de> for FlattenSeed<'_, '_, T> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "an array of {} values", T::DATATYPE.as_str())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        if self.depth >= self.state.limits.max_rank {
            return Err(de::Error::custom(format!("data is nested deeper than {} levels", self.state.limits.max_rank)));
        }
        while seq.next_element_seed(FlattenSeed { state: &mut *self.state, depth: self.depth + 1 })?.is_some() {}
        Ok(())
    }

    fn visit_bool<E: de::Error>(self, value: bool) -> Result<(), E> {
        self.push(Scalar::Bool(value))
    }
    fn visit_i64<E: de::Error>(self, value: i64) -> Result<(), E> {
        self.push(Scalar::Int(value))
    }
    fn visit_u64<E: de::Error>(self, value: u64) -> Result<(), E> {
        self.push(Scalar::Uint(value))
    }
    fn visit_f64<E: de::Error>(self, value: f64) -> Result<(), E> {
        self.push(Scalar::Float(value))
    }
    fn visit_str<E: de::Error>(self, value: &str) -> Result<(), E> {
        self.push(Scalar::Str(value))
    }
}

fn flatten<T: Element>(name: &str, expected: usize, raw: &RawValue, limits: &Limits) -> Result<Vec<T>, DecodeError> {
    // Each element takes at least two bytes of JSON, so the body bounds the reservation too.
    let mut state = Flatten { out: Vec::with_capacity(expected.min(raw.get().len() / 2)), expected, limits };
    let mut deserializer = serde_json::Deserializer::from_str(raw.get());
    FlattenSeed { state: &mut state, depth: 0 }
        .deserialize(&mut deserializer)
        .map_err(|e| error(format!("input '{name}': {}", strip_position(&e))))?;
    if state.out.len() != expected {
        return Err(error(format!(
            "input '{name}': data has {} elements, but its shape holds {expected}",
            state.out.len()
        )));
    }
    Ok(state.out)
}

/// serde_json appends "at line 1 column N" relative to the data fragment, which would mislead.
fn strip_position(error: &serde_json::Error) -> String {
    let text = error.to_string();
    match text.rfind(" at line ") {
        Some(position) => text[..position].to_owned(),
        None => text,
    }
}

fn decode_json_data(
    name: &str,
    datatype: DataType,
    expected: usize,
    raw: &RawValue,
    limits: &Limits,
) -> Result<TensorData, DecodeError> {
    Ok(match datatype {
        DataType::Bool => TensorData::Bool(flatten(name, expected, raw, limits)?),
        DataType::Uint8 => TensorData::Uint8(flatten(name, expected, raw, limits)?),
        DataType::Uint16 => TensorData::Uint16(flatten(name, expected, raw, limits)?),
        DataType::Uint32 => TensorData::Uint32(flatten(name, expected, raw, limits)?),
        DataType::Uint64 => TensorData::Uint64(flatten(name, expected, raw, limits)?),
        DataType::Int8 => TensorData::Int8(flatten(name, expected, raw, limits)?),
        DataType::Int16 => TensorData::Int16(flatten(name, expected, raw, limits)?),
        DataType::Int32 => TensorData::Int32(flatten(name, expected, raw, limits)?),
        DataType::Int64 => TensorData::Int64(flatten(name, expected, raw, limits)?),
        DataType::Fp16 => TensorData::Fp16(flatten(name, expected, raw, limits)?),
        DataType::Bf16 => TensorData::Bf16(flatten(name, expected, raw, limits)?),
        DataType::Fp32 => TensorData::Fp32(flatten(name, expected, raw, limits)?),
        DataType::Fp64 => TensorData::Fp64(flatten(name, expected, raw, limits)?),
        DataType::Bytes => TensorData::Bytes(flatten(name, expected, raw, limits)?),
    })
}

// ---------------------------------------------------------------------------------------------
// Binary data: little-endian elements; BYTES as (u32 length, bytes) pairs.

fn fixed<const N: usize, T>(bytes: &[u8], from: impl Fn([u8; N]) -> T) -> Vec<T> {
    bytes
        .chunks_exact(N)
        .map(|chunk| {
            let mut array = [0u8; N];
            array.copy_from_slice(chunk);
            from(array)
        })
        .collect()
}

fn decode_binary_data(
    name: &str,
    datatype: DataType,
    expected: usize,
    bytes: &[u8],
    limits: &Limits,
) -> Result<TensorData, DecodeError> {
    let Some(size) = datatype.size() else {
        return decode_binary_bytes(name, expected, bytes, limits);
    };
    // `expected` is capped far below usize::MAX / 8.
    if bytes.len() != expected.saturating_mul(size) {
        return Err(error(format!(
            "input '{name}': binary_data_size is {}, but {expected} {} elements take {}",
            bytes.len(),
            datatype.as_str(),
            expected.saturating_mul(size)
        )));
    }
    Ok(match datatype {
        DataType::Bool => {
            if let Some(position) = bytes.iter().position(|&byte| byte > 1) {
                return Err(error(format!("input '{name}': element {position} is not a boolean (0 or 1)")));
            }
            TensorData::Bool(bytes.iter().map(|&byte| byte == 1).collect())
        }
        DataType::Uint8 => TensorData::Uint8(bytes.to_vec()),
        DataType::Uint16 => TensorData::Uint16(fixed(bytes, u16::from_le_bytes)),
        DataType::Uint32 => TensorData::Uint32(fixed(bytes, u32::from_le_bytes)),
        DataType::Uint64 => TensorData::Uint64(fixed(bytes, u64::from_le_bytes)),
        DataType::Int8 => TensorData::Int8(fixed(bytes, i8::from_le_bytes)),
        DataType::Int16 => TensorData::Int16(fixed(bytes, i16::from_le_bytes)),
        DataType::Int32 => TensorData::Int32(fixed(bytes, i32::from_le_bytes)),
        DataType::Int64 => TensorData::Int64(fixed(bytes, i64::from_le_bytes)),
        DataType::Fp16 => TensorData::Fp16(fixed(bytes, f16::from_le_bytes)),
        DataType::Bf16 => TensorData::Bf16(fixed(bytes, bf16::from_le_bytes)),
        DataType::Fp32 => TensorData::Fp32(fixed(bytes, f32::from_le_bytes)),
        DataType::Fp64 => TensorData::Fp64(fixed(bytes, f64::from_le_bytes)),
        DataType::Bytes => return decode_binary_bytes(name, expected, bytes, limits),
    })
}

fn decode_binary_bytes(
    name: &str,
    expected: usize,
    mut bytes: &[u8],
    limits: &Limits,
) -> Result<TensorData, DecodeError> {
    // Each element takes at least four bytes, so this capacity is bounded by the body too.
    let mut out = Vec::with_capacity(expected.min(bytes.len() / 4));
    while !bytes.is_empty() {
        let index = out.len();
        if index >= expected {
            return Err(error(format!("input '{name}': binary data holds more than the shape's {expected} elements")));
        }
        let Some((prefix, rest)) = bytes.split_first_chunk::<4>() else {
            return Err(error(format!("input '{name}': element {index} has a truncated length prefix")));
        };
        let len = usize::try_from(u32::from_le_bytes(*prefix)).unwrap_or(usize::MAX);
        if len > limits.max_bytes_element {
            return Err(error(format!(
                "input '{name}': element {index} of {len} bytes is longer than the limit of {}",
                limits.max_bytes_element
            )));
        }
        if len > rest.len() {
            return Err(error(format!(
                "input '{name}': element {index} claims {len} bytes, but only {} remain",
                rest.len()
            )));
        }
        let (value, rest) = rest.split_at(len);
        out.push(value.to_vec());
        bytes = rest;
    }
    if out.len() != expected {
        return Err(error(format!(
            "input '{name}': binary data holds {} elements, but its shape holds {expected}",
            out.len()
        )));
    }
    Ok(TensorData::Bytes(out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn limits() -> Limits {
        Limits { max_tensor_elements: 1000, max_bytes_element: 8, ..Limits::default() }
    }

    fn decode(body: &str) -> Result<InferRequest, String> {
        decode_request(body.as_bytes(), None, &limits()).map_err(|e| e.0)
    }

    fn input(datatype: &str, shape: &str, data: &str) -> String {
        format!(r#"{{"inputs":[{{"name":"x","datatype":"{datatype}","shape":{shape},"data":{data}}}]}}"#)
    }

    /// Decodes one input and compares its data, or checks the error mentions `expected`.
    fn check(datatype: &str, shape: &str, data: &str, expected: Result<TensorData, &str>) {
        let result = decode(&input(datatype, shape, data)).map(|request| request.inputs[0].data.clone());
        match expected {
            Ok(want) => assert_eq!(result, Ok(want), "{datatype} {shape} {data}"),
            Err(needle) => {
                let message = result.expect_err("accepted");
                assert!(message.contains(needle), "'{message}' lacks '{needle}'");
            }
        }
    }

    #[test]
    fn every_datatype_decodes_from_json() {
        check("BOOL", "[2]", "[true,false]", Ok(TensorData::Bool(vec![true, false])));
        check("UINT8", "[2]", "[0,255]", Ok(TensorData::Uint8(vec![0, 255])));
        check("UINT16", "[1]", "[65535]", Ok(TensorData::Uint16(vec![65535])));
        check("UINT32", "[1]", "[4294967295]", Ok(TensorData::Uint32(vec![u32::MAX])));
        check("UINT64", "[1]", "[18446744073709551615]", Ok(TensorData::Uint64(vec![u64::MAX])));
        check("INT8", "[2]", "[-128,127]", Ok(TensorData::Int8(vec![-128, 127])));
        check("INT16", "[1]", "[-32768]", Ok(TensorData::Int16(vec![i16::MIN])));
        check("INT32", "[1]", "[-5]", Ok(TensorData::Int32(vec![-5])));
        check("INT64", "[1]", "[-9223372036854775808]", Ok(TensorData::Int64(vec![i64::MIN])));
        check("FP16", "[1]", "[1.5]", Ok(TensorData::Fp16(vec![f16::from_f32(1.5)])));
        check("BF16", "[1]", "[2]", Ok(TensorData::Bf16(vec![bf16::from_f32(2.0)])));
        check("FP32", "[2]", "[1, 2.5]", Ok(TensorData::Fp32(vec![1.0, 2.5])));
        check("FP64", "[1]", "[0.1]", Ok(TensorData::Fp64(vec![0.1])));
        check("BYTES", "[2]", r#"["ab",""]"#, Ok(TensorData::Bytes(vec![b"ab".to_vec(), vec![]])));
    }

    #[test]
    fn nested_and_flat_data_are_the_same() {
        let flat = decode(&input("INT32", "[2,2]", "[1,2,3,4]")).unwrap();
        let nested = decode(&input("INT32", "[2,2]", "[[1,2],[3,4]]")).unwrap();
        assert_eq!(flat, nested);
    }

    #[test]
    fn mismatched_or_hostile_data_is_refused_precisely() {
        check("BOOL", "[3]", "[true]", Err("data has 1 elements, but its shape holds 3"));
        check("INT32", "[1]", "[1,2]", Err("more elements than the shape's 1"));
        check("UINT8", "[1]", "[256]", Err("element 0: value out of range for UINT8"));
        check("INT8", "[1]", "[-1.5]", Err("expected a INT8 value, found the number -1.5"));
        check("BOOL", "[1]", "[1]", Err("expected a BOOL value"));
        check("FP32", "[1]", r#"["1"]"#, Err("expected a FP32 value, found a string"));
        check("FP32", "[1]", "[1e300]", Err("out of range for FP32"));
        check("FP32", "[1]", "[null]", Err("input 'x'"));
        check("FP32", "[1]", "5", Err("data must be an array"));
        check("FP32", "[1]", r#"{"a":1}"#, Err("input 'x'"));
        check("BYTES", "[1]", r#"["123456789"]"#, Err("longer than the limit of 8"));
        check("FLOAT", "[1]", "[1]", Err("unknown datatype 'FLOAT'"));
        check("fp32", "[1]", "[1]", Err("unknown datatype 'fp32'"));
        check("FP32", "[1001]", "[]", Err("1001 elements, more than the limit of 1000"));
        check("FP32", "[4294967296,4294967296,4294967296]", "[]", Err("overflows"));
        check("FP32", "[-1]", "[]", Err("invalid value"));
        check("FP32", "[1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1]", "[1]", Err("17 dimensions"));
        let deep = format!("{}1{}", "[".repeat(40), "]".repeat(40));
        check("FP32", "[1]", &deep, Err("nested deeper than 16"));
        let very_deep = format!("{}1{}", "[".repeat(100_000), "]".repeat(100_000));
        assert!(decode(&input("FP32", "[1]", &very_deep)).is_err());
    }

    #[test]
    fn malformed_requests_are_refused_precisely() {
        let refused = |body: &str, needle: &str| {
            let message = decode(body).expect_err("accepted");
            assert!(message.contains(needle), "'{message}' lacks '{needle}'");
        };
        refused("", "invalid inference request JSON");
        refused("{", "invalid inference request JSON");
        refused("[]", "invalid inference request JSON");
        refused(r#"{"inputs":[]}"#, "at least one input");
        refused(r#"{"inputs":[{"name":"x","datatype":"FP32","shape":[1]}]}"#, "has no data");
        refused(r#"{"inputs":[{"name":"","datatype":"FP32","shape":[1],"data":[1]}]}"#, "input names");
        refused(
            r#"{"parameters":{"p":[1]},"inputs":[{"name":"x","datatype":"FP32","shape":[1],"data":[1]}]}"#,
            "string, a number or a boolean",
        );
        refused(
            r#"{"parameters":{"binary_data_output":"yes"},"inputs":[{"name":"x","datatype":"FP32","shape":[1],"data":[1]}]}"#,
            "must be true or false",
        );
        refused(
            r#"{"inputs":[{"name":"x","datatype":"FP32","shape":[1],"data":[1]}],"outputs":[{"name":"y","parameters":{"classification":2}}]}"#,
            "classification extension",
        );
    }

    #[test]
    fn outputs_and_id_are_read() {
        let request = decode(
            r#"{"id":"42","parameters":{"binary_data_output":true},"inputs":[{"name":"x","datatype":"FP32","shape":[1],"data":[1]}],
                "outputs":[{"name":"a"},{"name":"b","parameters":{"binary_data":false}}]}"#,
        )
        .unwrap();
        assert_eq!(request.id.as_deref(), Some("42"));
        assert_eq!(
            request.outputs,
            vec![
                RequestedOutput { name: "a".into(), binary: true },
                RequestedOutput { name: "b".into(), binary: false }
            ]
        );
    }

    fn binary_request(inputs: &[(&str, &str, &str, usize)], tail: &[u8]) -> (Vec<u8>, usize) {
        let inputs: Vec<String> = inputs
            .iter()
            .map(|(name, datatype, shape, size)| {
                format!(r#"{{"name":"{name}","datatype":"{datatype}","shape":{shape},"parameters":{{"binary_data_size":{size}}}}}"#)
            })
            .collect();
        let json = format!(r#"{{"inputs":[{}]}}"#, inputs.join(","));
        let mut body = json.clone().into_bytes();
        body.extend_from_slice(tail);
        (body, json.len())
    }

    #[test]
    fn binary_inputs_decode_in_order() {
        let mut tail = Vec::new();
        tail.extend_from_slice(&1.5f32.to_le_bytes());
        tail.extend_from_slice(&(-2.0f32).to_le_bytes());
        tail.extend_from_slice(&[2, 0, 0, 0, b'h', b'i']);
        let (body, json_len) = binary_request(&[("a", "FP32", "[2]", 8), ("b", "BYTES", "[1]", 6)], &tail);
        let request = decode_request(&body, Some(json_len), &limits()).unwrap();
        assert_eq!(request.inputs[0].data, TensorData::Fp32(vec![1.5, -2.0]));
        assert_eq!(request.inputs[1].data, TensorData::Bytes(vec![b"hi".to_vec()]));
    }

    #[test]
    fn malformed_binary_data_is_refused_precisely() {
        let refused = |inputs: &[(&str, &str, &str, usize)], tail: &[u8], needle: &str| {
            let (body, json_len) = binary_request(inputs, tail);
            let message = decode_request(&body, Some(json_len), &limits()).expect_err("accepted").0;
            assert!(message.contains(needle), "'{message}' lacks '{needle}'");
        };
        refused(&[("a", "FP32", "[2]", 4)], &[0; 4], "but 2 FP32 elements take 8");
        refused(&[("a", "FP32", "[1]", 8)], &[0; 4], "only 4 bytes of binary data remain");
        refused(&[("a", "FP32", "[1]", 4)], &[0; 6], "2 bytes of binary data are not claimed");
        refused(&[("a", "BOOL", "[1]", 1)], &[7], "not a boolean");
        refused(&[("a", "BYTES", "[1]", 3)], &[1, 0, 0], "truncated length prefix");
        refused(&[("a", "BYTES", "[1]", 5)], &[9, 0, 0, 0, 1], "element 0 of 9 bytes is longer than the limit");
        refused(&[("a", "BYTES", "[1]", 5)], &[2, 0, 0, 0, 1], "claims 2 bytes, but only 1 remain");
        refused(&[("a", "BYTES", "[2]", 5)], &[1, 0, 0, 0, 1], "holds 1 elements, but its shape holds 2");
        refused(&[("a", "BYTES", "[1]", 10)], &[1, 0, 0, 0, 1, 1, 0, 0, 0, 1], "more than the shape's 1");
        let message = decode_request(b"{}", Some(10), &limits()).expect_err("accepted").0;
        assert!(message.contains("the body has only 2 bytes"));
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(body in proptest::collection::vec(any::<u8>(), 0..512), split in proptest::option::of(0usize..600)) {
            let _ = decode_request(&body, split, &limits());
        }

        #[test]
        fn arbitrary_json_shaped_input_never_panics(
            datatype in prop_oneof![Just("FP32"), Just("BYTES"), Just("BOOL"), Just("INT8"), Just("UINT64"), Just("FP16")],
            shape in proptest::collection::vec(0u64..5, 0..4),
            data in "[\\[\\]0-9.,\"a-z -]{0,64}",
        ) {
            let body = input(datatype, &format!("{shape:?}"), &data);
            let _ = decode(&body);
        }

        #[test]
        fn json_and_binary_fp32_agree(values in proptest::collection::vec((-1_000_000i32..1_000_000).prop_map(|v| v as f32 / 1024.0), 1..50)) {
            let json = input("FP32", &format!("[{}]", values.len()), &serde_json::to_string(&values).unwrap());
            let from_json = decode(&json).unwrap();
            let tail: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
            let (body, json_len) = binary_request(&[("x", "FP32", &format!("[{}]", values.len()), tail.len())], &tail);
            let from_binary = decode_request(&body, Some(json_len), &limits()).unwrap();
            prop_assert_eq!(&from_json.inputs[0].data, &from_binary.inputs[0].data);
        }

        /// What is sent to an upstream decodes back to the same tensors, in JSON and in binary,
        /// and an upstream's answer in the same form decodes with `decode_response`.
        #[test]
        fn upstream_requests_and_responses_round_trip(
            ints in proptest::collection::vec(any::<i64>(), 1..20),
            floats in proptest::collection::vec((-1_000_000i32..1_000_000).prop_map(|v| f64::from(v) / 1024.0), 1..20),
            texts in proptest::collection::vec("[a-z ]{0,8}", 1..5),
            binary in any::<bool>(),
        ) {
            let tensors = vec![
                Tensor { name: "i".into(), shape: vec![ints.len() as u64], data: TensorData::Int64(ints) },
                Tensor { name: "f".into(), shape: vec![1, floats.len() as u64], data: TensorData::Fp64(floats) },
                Tensor {
                    name: "s".into(),
                    shape: vec![texts.len() as u64],
                    data: TensorData::Bytes(texts.into_iter().map(String::into_bytes).collect()),
                },
            ];
            let limits = Limits::default();
            let encoded = crate::oip::encode_request(Some("id"), &tensors, binary).unwrap();
            prop_assert_eq!(encoded.json_len.is_some(), binary);
            let request = decode_request(&encoded.body, encoded.json_len, &limits).unwrap();
            prop_assert_eq!(&request.inputs, &tensors);
            prop_assert_eq!(request.binary_output_default, binary);
            let answer = crate::oip::encode_response(&crate::oip::InferResponse {
                model_name: "m".into(),
                model_version: None,
                id: None,
                outputs: tensors.iter().map(|tensor| (tensor.clone(), binary)).collect(),
            })
            .unwrap();
            prop_assert_eq!(decode_response(&answer.body, answer.json_len, &limits).unwrap(), tensors);
        }
    }

    #[test]
    fn responses_are_decoded_under_the_same_caps() {
        let limits = limits();
        let too_big = r#"{"outputs":[{"name":"y","datatype":"FP32","shape":[100000],"data":[]}]}"#;
        let message = decode_response(too_big.as_bytes(), None, &limits).unwrap_err().0;
        assert!(message.contains("in the outputs") && message.contains("more than the limit"), "{message}");
        let message = decode_response(b"{\"outputs\":[]", None, &limits).unwrap_err().0;
        assert!(message.contains("invalid inference response JSON"), "{message}");
        let ok = r#"{"model_name":"m","extra":{"a":1},"outputs":[{"name":"y","datatype":"INT32","shape":[2],"data":[1,2]}]}"#;
        let outputs = decode_response(ok.as_bytes(), None, &limits).unwrap();
        assert_eq!(outputs[0].data, TensorData::Int32(vec![1, 2]));
    }
}
