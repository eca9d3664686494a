//! Typed tensors: one `Vec` per protocol datatype, row-major.

use half::{bf16, f16};
use serde::{Serialize, Serializer};

/// The protocol's datatypes (Triton's BF16 included).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DataType {
    Bool,
    Uint8,
    Uint16,
    Uint32,
    Uint64,
    Int8,
    Int16,
    Int32,
    Int64,
    Fp16,
    Bf16,
    Fp32,
    Fp64,
    Bytes,
}

impl DataType {
    pub const ALL: [DataType; 14] = [
        DataType::Bool,
        DataType::Uint8,
        DataType::Uint16,
        DataType::Uint32,
        DataType::Uint64,
        DataType::Int8,
        DataType::Int16,
        DataType::Int32,
        DataType::Int64,
        DataType::Fp16,
        DataType::Bf16,
        DataType::Fp32,
        DataType::Fp64,
        DataType::Bytes,
    ];

    /// The protocol's name, e.g. `FP32`.
    pub fn as_str(self) -> &'static str {
        match self {
            DataType::Bool => "BOOL",
            DataType::Uint8 => "UINT8",
            DataType::Uint16 => "UINT16",
            DataType::Uint32 => "UINT32",
            DataType::Uint64 => "UINT64",
            DataType::Int8 => "INT8",
            DataType::Int16 => "INT16",
            DataType::Int32 => "INT32",
            DataType::Int64 => "INT64",
            DataType::Fp16 => "FP16",
            DataType::Bf16 => "BF16",
            DataType::Fp32 => "FP32",
            DataType::Fp64 => "FP64",
            DataType::Bytes => "BYTES",
        }
    }

    /// Parses a protocol name; names are case-sensitive.
    pub fn parse(name: &str) -> Option<DataType> {
        DataType::ALL.into_iter().find(|datatype| datatype.as_str() == name)
    }

    /// Bytes per element in binary form; `None` for BYTES, whose elements vary.
    pub fn size(self) -> Option<usize> {
        Some(match self {
            DataType::Bool | DataType::Uint8 | DataType::Int8 => 1,
            DataType::Uint16 | DataType::Int16 | DataType::Fp16 | DataType::Bf16 => 2,
            DataType::Uint32 | DataType::Int32 | DataType::Fp32 => 4,
            DataType::Uint64 | DataType::Int64 | DataType::Fp64 => 8,
            DataType::Bytes => return None,
        })
    }
}

impl Serialize for DataType {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

/// The elements of a tensor, flat, in row-major order.
#[derive(Debug, Clone, PartialEq)]
pub enum TensorData {
    Bool(Vec<bool>),
    Uint8(Vec<u8>),
    Uint16(Vec<u16>),
    Uint32(Vec<u32>),
    Uint64(Vec<u64>),
    Int8(Vec<i8>),
    Int16(Vec<i16>),
    Int32(Vec<i32>),
    Int64(Vec<i64>),
    Fp16(Vec<f16>),
    Bf16(Vec<bf16>),
    Fp32(Vec<f32>),
    Fp64(Vec<f64>),
    Bytes(Vec<Vec<u8>>),
}

/// Applies `$body` to the vector inside any variant.
macro_rules! each_variant {
    ($data:expr, $vec:ident => $body:expr) => {
        match $data {
            TensorData::Bool($vec) => $body,
            TensorData::Uint8($vec) => $body,
            TensorData::Uint16($vec) => $body,
            TensorData::Uint32($vec) => $body,
            TensorData::Uint64($vec) => $body,
            TensorData::Int8($vec) => $body,
            TensorData::Int16($vec) => $body,
            TensorData::Int32($vec) => $body,
            TensorData::Int64($vec) => $body,
            TensorData::Fp16($vec) => $body,
            TensorData::Bf16($vec) => $body,
            TensorData::Fp32($vec) => $body,
            TensorData::Fp64($vec) => $body,
            TensorData::Bytes($vec) => $body,
        }
    };
}

impl TensorData {
    pub fn datatype(&self) -> DataType {
        match self {
            TensorData::Bool(_) => DataType::Bool,
            TensorData::Uint8(_) => DataType::Uint8,
            TensorData::Uint16(_) => DataType::Uint16,
            TensorData::Uint32(_) => DataType::Uint32,
            TensorData::Uint64(_) => DataType::Uint64,
            TensorData::Int8(_) => DataType::Int8,
            TensorData::Int16(_) => DataType::Int16,
            TensorData::Int32(_) => DataType::Int32,
            TensorData::Int64(_) => DataType::Int64,
            TensorData::Fp16(_) => DataType::Fp16,
            TensorData::Bf16(_) => DataType::Bf16,
            TensorData::Fp32(_) => DataType::Fp32,
            TensorData::Fp64(_) => DataType::Fp64,
            TensorData::Bytes(_) => DataType::Bytes,
        }
    }

    pub fn len(&self) -> usize {
        each_variant!(self, values => values.len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// False if any floating-point element is NaN or infinite.
    pub fn all_finite(&self) -> bool {
        match self {
            TensorData::Fp16(values) => values.iter().all(|value| value.is_finite()),
            TensorData::Bf16(values) => values.iter().all(|value| value.is_finite()),
            TensorData::Fp32(values) => values.iter().all(|value| value.is_finite()),
            TensorData::Fp64(values) => values.iter().all(|value| value.is_finite()),
            _ => true,
        }
    }

    /// The elements in Triton's binary form: little-endian, and for BYTES each element
    /// preceded by its length as a little-endian u32.
    pub fn to_le_bytes(&self) -> Vec<u8> {
        fn fixed<const N: usize, T: Copy>(values: &[T], to: impl Fn(T) -> [u8; N]) -> Vec<u8> {
            let mut out = Vec::with_capacity(values.len() * N);
            for &value in values {
                out.extend_from_slice(&to(value));
            }
            out
        }
        match self {
            TensorData::Bool(values) => values.iter().map(|&value| u8::from(value)).collect(),
            TensorData::Uint8(values) => values.clone(),
            TensorData::Uint16(values) => fixed(values, u16::to_le_bytes),
            TensorData::Uint32(values) => fixed(values, u32::to_le_bytes),
            TensorData::Uint64(values) => fixed(values, u64::to_le_bytes),
            TensorData::Int8(values) => fixed(values, i8::to_le_bytes),
            TensorData::Int16(values) => fixed(values, i16::to_le_bytes),
            TensorData::Int32(values) => fixed(values, i32::to_le_bytes),
            TensorData::Int64(values) => fixed(values, i64::to_le_bytes),
            TensorData::Fp16(values) => fixed(values, f16::to_le_bytes),
            TensorData::Bf16(values) => fixed(values, bf16::to_le_bytes),
            TensorData::Fp32(values) => fixed(values, f32::to_le_bytes),
            TensorData::Fp64(values) => fixed(values, f64::to_le_bytes),
            TensorData::Bytes(values) => {
                let total: usize = values.iter().map(|value| value.len() + 4).sum();
                let mut out = Vec::with_capacity(total);
                for value in values {
                    // Elements longer than u32::MAX cannot exist: decode caps them far lower and
                    // models do not make them; saturate rather than wrap if one ever did.
                    let len = u32::try_from(value.len()).unwrap_or(u32::MAX);
                    out.extend_from_slice(&len.to_le_bytes());
                    out.extend_from_slice(value);
                }
                out
            }
        }
    }
}

/// A named tensor with its shape.
#[derive(Debug, Clone, PartialEq)]
pub struct Tensor {
    pub name: String,
    pub shape: Vec<u64>,
    pub data: TensorData,
}

/// Serializes elements as a flat JSON array (FP16/BF16 as numbers, BYTES as strings).
pub(crate) struct JsonData<'a>(pub &'a TensorData);

impl Serialize for JsonData<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeSeq;
        match self.0 {
            TensorData::Fp16(values) => {
                let mut seq = serializer.serialize_seq(Some(values.len()))?;
                for value in values {
                    seq.serialize_element(&value.to_f32())?;
                }
                seq.end()
            }
            TensorData::Bf16(values) => {
                let mut seq = serializer.serialize_seq(Some(values.len()))?;
                for value in values {
                    seq.serialize_element(&value.to_f32())?;
                }
                seq.end()
            }
            TensorData::Bytes(values) => {
                let mut seq = serializer.serialize_seq(Some(values.len()))?;
                for value in values {
                    seq.serialize_element(&String::from_utf8_lossy(value))?;
                }
                seq.end()
            }
            TensorData::Bool(values) => values.serialize(serializer),
            TensorData::Uint8(values) => values.serialize(serializer),
            TensorData::Uint16(values) => values.serialize(serializer),
            TensorData::Uint32(values) => values.serialize(serializer),
            TensorData::Uint64(values) => values.serialize(serializer),
            TensorData::Int8(values) => values.serialize(serializer),
            TensorData::Int16(values) => values.serialize(serializer),
            TensorData::Int32(values) => values.serialize(serializer),
            TensorData::Int64(values) => values.serialize(serializer),
            TensorData::Fp32(values) => values.serialize(serializer),
            TensorData::Fp64(values) => values.serialize(serializer),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn datatype_names_round_trip_and_are_case_sensitive() {
        for datatype in DataType::ALL {
            assert_eq!(DataType::parse(datatype.as_str()), Some(datatype));
        }
        assert_eq!(DataType::parse("fp32"), None);
        assert_eq!(DataType::parse("FLOAT"), None);
    }

    #[test]
    fn bytes_elements_are_length_prefixed() {
        let data = TensorData::Bytes(vec![b"ab".to_vec(), vec![]]);
        assert_eq!(data.to_le_bytes(), vec![2, 0, 0, 0, b'a', b'b', 0, 0, 0, 0]);
        assert_eq!(TensorData::Int16(vec![-2]).to_le_bytes(), vec![0xfe, 0xff]);
    }
}
