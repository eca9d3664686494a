//! The Open Inference Protocol (KServe V2 / Triton / MLServer) wire format: the only module that
//! knows its JSON.
//!
//! [`decode`] turns a request body (JSON, or JSON followed by Triton's binary tensor data) into a
//! typed [`InferRequest`], checking every size against [`Limits`] before it allocates.
//! [`encode`] turns an [`InferResponse`] back into bytes. Neither knows about models: checking a
//! request against a model's signature is [`ModelMetadata::validate`].

pub mod decode;
pub mod encode;
mod tensor;

use serde::Serialize;

pub use decode::{DecodeError, decode_request, decode_response};
pub use encode::{encode_request, encode_response};
pub use tensor::{DataType, Tensor, TensorData};

/// Triton's header for a JSON header followed by binary tensor data.
pub const INFERENCE_HEADER_CONTENT_LENGTH: &str = "inference-header-content-length";

/// Caps on what one request may make the server allocate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Elements in one tensor (the product of its shape).
    pub max_tensor_elements: u64,
    /// The first dimension of an input.
    pub max_batch: u64,
    /// Bytes in one BYTES element.
    pub max_bytes_element: usize,
    /// Dimensions of one tensor, and nesting depth of its JSON `data`.
    pub max_rank: usize,
    /// Inputs (and requested outputs) in one request.
    pub max_tensors: usize,
    /// Entries in one `parameters` object, and characters in names and ids.
    pub max_parameters: usize,
    pub max_name_len: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_tensor_elements: 4 * 1024 * 1024,
            max_batch: 1024,
            max_bytes_element: 64 * 1024,
            max_rank: 16,
            max_tensors: 64,
            max_parameters: 64,
            max_name_len: 256,
        }
    }
}

/// A scalar request or tensor parameter (the protocol allows only these).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Parameter {
    Bool(bool),
    Int(i64),
    Float(f64),
    String(String),
}

/// An output the client asked for.
#[derive(Debug, Clone, PartialEq)]
pub struct RequestedOutput {
    pub name: String,
    /// Send this output as Triton binary tensor data rather than JSON.
    pub binary: bool,
}

/// A decoded inference request.
#[derive(Debug, Clone, PartialEq)]
pub struct InferRequest {
    pub id: Option<String>,
    pub inputs: Vec<Tensor>,
    /// Empty means every output.
    pub outputs: Vec<RequestedOutput>,
    /// Send outputs not listed in `outputs` as binary (`binary_data_output`).
    pub binary_output_default: bool,
}

/// A response ready to encode.
#[derive(Debug, Clone, PartialEq)]
pub struct InferResponse {
    pub model_name: String,
    /// Omitted for callers whose output policy hides model internals.
    pub model_version: Option<String>,
    pub id: Option<String>,
    /// Each output with whether it goes out as binary.
    pub outputs: Vec<(Tensor, bool)>,
}

/// A tensor in a model's signature; `-1` marks a dimension of any size.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TensorMeta {
    pub name: String,
    pub datatype: DataType,
    pub shape: Vec<i64>,
}

/// `GET /v2/models/{name}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ModelMetadata {
    pub name: String,
    /// Omitted for callers whose output policy hides model internals.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub versions: Vec<String>,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub platform: String,
    pub inputs: Vec<TensorMeta>,
    pub outputs: Vec<TensorMeta>,
}

/// `GET /v2`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ServerMetadata {
    pub name: String,
    pub version: String,
    pub extensions: Vec<String>,
}

/// Per-model input rules beyond the signature.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InputPolicy {
    pub allow_non_finite: bool,
    pub max_batch: u64,
}

impl ModelMetadata {
    /// Checks a decoded request against this signature: every input known, once, with the
    /// model's datatype and a shape that fits; every required input present; every requested
    /// output known; floats finite unless the model allows otherwise. The message says which
    /// input and what was expected, so clients can fix their request.
    pub fn validate(&self, request: &InferRequest, policy: InputPolicy) -> Result<(), String> {
        for (index, input) in request.inputs.iter().enumerate() {
            if request.inputs[..index].iter().any(|earlier| earlier.name == input.name) {
                return Err(format!("input '{}' is given twice", input.name));
            }
            let Some(meta) = self.inputs.iter().find(|meta| meta.name == input.name) else {
                return Err(format!("unknown input '{}': the model takes {}", input.name, name_list(&self.inputs)));
            };
            if input.data.datatype() != meta.datatype {
                return Err(format!(
                    "input '{}' must be {}, not {}",
                    input.name,
                    meta.datatype.as_str(),
                    input.data.datatype().as_str()
                ));
            }
            let fits = input.shape.len() == meta.shape.len()
                && input
                    .shape
                    .iter()
                    .zip(&meta.shape)
                    .all(|(&got, &want)| want < 0 || u64::try_from(want).is_ok_and(|want| want == got));
            if !fits {
                return Err(format!(
                    "input '{}' has shape {:?}, the model takes {:?} (-1 is any size)",
                    input.name, input.shape, meta.shape
                ));
            }
            if meta.shape.first().is_some_and(|&dim| dim < 0)
                && input.shape.first().is_some_and(|&batch| batch > policy.max_batch)
            {
                return Err(format!(
                    "input '{}' has a batch of {}, more than the limit of {}",
                    input.name, input.shape[0], policy.max_batch
                ));
            }
            if !policy.allow_non_finite && !input.data.all_finite() {
                return Err(format!("input '{}' holds NaN or infinite values", input.name));
            }
        }
        if let Some(missing) =
            self.inputs.iter().find(|meta| !request.inputs.iter().any(|input| input.name == meta.name))
        {
            return Err(format!("input '{}' is missing", missing.name));
        }
        for (index, output) in request.outputs.iter().enumerate() {
            if request.outputs[..index].iter().any(|earlier| earlier.name == output.name) {
                return Err(format!("output '{}' is requested twice", output.name));
            }
            if !self.outputs.iter().any(|meta| meta.name == output.name) {
                return Err(format!("unknown output '{}': the model gives {}", output.name, name_list(&self.outputs)));
            }
        }
        Ok(())
    }
}

fn name_list(metas: &[TensorMeta]) -> String {
    metas.iter().map(|meta| format!("'{}'", meta.name)).collect::<Vec<_>>().join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model() -> ModelMetadata {
        ModelMetadata {
            name: "m".into(),
            versions: vec!["1".into()],
            platform: "onnx_onnxv1".into(),
            inputs: vec![TensorMeta { name: "x".into(), datatype: DataType::Fp32, shape: vec![-1, 2] }],
            outputs: vec![TensorMeta { name: "y".into(), datatype: DataType::Fp32, shape: vec![-1] }],
        }
    }

    fn request(inputs: Vec<Tensor>, outputs: &[&str]) -> InferRequest {
        InferRequest {
            id: None,
            inputs,
            outputs: outputs.iter().map(|name| RequestedOutput { name: (*name).into(), binary: false }).collect(),
            binary_output_default: false,
        }
    }

    fn x(shape: Vec<u64>, data: Vec<f32>) -> Tensor {
        Tensor { name: "x".into(), shape, data: TensorData::Fp32(data) }
    }

    const POLICY: InputPolicy = InputPolicy { allow_non_finite: false, max_batch: 4 };

    fn check(request: InferRequest, expected: Result<(), &str>) {
        let result = model().validate(&request, POLICY);
        match expected {
            Ok(()) => assert_eq!(result, Ok(())),
            Err(needle) => {
                let message = result.expect_err("accepted");
                assert!(message.contains(needle), "'{message}' lacks '{needle}'");
            }
        }
    }

    #[test]
    fn requests_are_checked_against_the_signature() {
        check(request(vec![x(vec![1, 2], vec![1.0, 2.0])], &["y"]), Ok(()));
        check(request(vec![x(vec![2, 2], vec![0.0; 4])], &[]), Ok(()));
        check(request(vec![x(vec![1, 3], vec![0.0; 3])], &[]), Err("has shape [1, 3]"));
        check(request(vec![x(vec![2], vec![0.0; 2])], &[]), Err("has shape [2]"));
        check(request(vec![x(vec![5, 2], vec![0.0; 10])], &[]), Err("batch of 5"));
        check(request(vec![], &[]), Err("input 'x' is missing"));
        check(request(vec![x(vec![1, 2], vec![0.0; 2]), x(vec![1, 2], vec![0.0; 2])], &[]), Err("given twice"));
        let mut other = x(vec![1, 2], vec![0.0; 2]);
        other.name = "z".into();
        check(request(vec![other], &[]), Err("unknown input 'z': the model takes 'x'"));
        let int = Tensor { name: "x".into(), shape: vec![1, 2], data: TensorData::Int64(vec![1, 2]) };
        check(request(vec![int], &[]), Err("must be FP32, not INT64"));
        check(request(vec![x(vec![1, 2], vec![f32::NAN, 0.0])], &[]), Err("NaN"));
        check(request(vec![x(vec![1, 2], vec![f32::INFINITY, 0.0])], &[]), Err("NaN or infinite"));
        check(request(vec![x(vec![1, 2], vec![0.0; 2])], &["p"]), Err("unknown output 'p'"));
        check(request(vec![x(vec![1, 2], vec![0.0; 2])], &["y", "y"]), Err("requested twice"));
    }
}
