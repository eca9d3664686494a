//! Response encoding: JSON, with outputs the client asked for in binary appended after it.

use serde::Serialize;

use super::{InferResponse, Parameter, Tensor, tensor::JsonData};

#[derive(Serialize)]
struct WireResponse<'a> {
    model_name: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    model_version: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<&'a str>,
    outputs: Vec<WireOutput<'a>>,
}

#[derive(Serialize)]
struct WireOutput<'a> {
    name: &'a str,
    datatype: &'static str,
    shape: &'a [u64],
    #[serde(skip_serializing_if = "Option::is_none")]
    parameters: Option<BinaryParameters>,
    #[serde(skip_serializing_if = "Option::is_none")]
    data: Option<JsonData<'a>>,
}

#[derive(Serialize)]
struct BinaryParameters {
    binary_data_size: Parameter,
}

/// An encoded response: the body, and the length of its JSON part when binary data follows
/// (the value of the `Inference-Header-Content-Length` response header).
#[derive(Debug)]
pub struct Encoded {
    pub body: Vec<u8>,
    pub json_len: Option<usize>,
}

/// Encodes a response. Serializing plain data into a `Vec` cannot fail; if it ever did, the
/// caller gets the error rather than a half-written body.
pub fn encode_response(response: &InferResponse) -> Result<Encoded, serde_json::Error> {
    let (outputs, binary) = wire_tensors(response.outputs.iter().map(|(tensor, binary)| (tensor, *binary)));
    let wire = WireResponse {
        model_name: &response.model_name,
        model_version: response.model_version.as_deref(),
        id: response.id.as_deref(),
        outputs,
    };
    finish(serde_json::to_vec(&wire)?, binary)
}

#[derive(Serialize)]
struct WireRequest<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    parameters: Option<RequestParameters>,
    inputs: Vec<WireOutput<'a>>,
}

#[derive(Serialize)]
struct RequestParameters {
    binary_data_output: bool,
}

/// Encodes an inference request for another OIP server (an upstream). With `binary`, inputs go
/// as Triton binary tensor data and the outputs are asked for in binary too; otherwise all JSON,
/// which every OIP server reads. Every output is asked for: the caller's selection is applied
/// here, after minimisation.
pub fn encode_request(id: Option<&str>, inputs: &[Tensor], binary: bool) -> Result<Encoded, serde_json::Error> {
    let (inputs, data) = wire_tensors(inputs.iter().map(|tensor| (tensor, binary)));
    let wire = WireRequest { id, parameters: binary.then_some(RequestParameters { binary_data_output: true }), inputs };
    finish(serde_json::to_vec(&wire)?, data)
}

/// Each tensor's JSON part, and the binary data of those sent in binary, in order.
fn wire_tensors<'a>(tensors: impl Iterator<Item = (&'a Tensor, bool)>) -> (Vec<WireOutput<'a>>, Option<Vec<u8>>) {
    let mut binary: Option<Vec<u8>> = None;
    let mut wire = Vec::new();
    for (tensor, as_binary) in tensors {
        let (parameters, data) = if as_binary {
            let bytes = tensor.data.to_le_bytes();
            let size = Parameter::Int(i64::try_from(bytes.len()).unwrap_or(i64::MAX));
            binary.get_or_insert_default().extend_from_slice(&bytes);
            (Some(BinaryParameters { binary_data_size: size }), None)
        } else {
            (None, Some(JsonData(&tensor.data)))
        };
        wire.push(WireOutput {
            name: &tensor.name,
            datatype: tensor.data.datatype().as_str(),
            shape: &tensor.shape,
            parameters,
            data,
        });
    }
    (wire, binary)
}

/// The JSON, followed by the binary data if any tensor went in binary (even an empty one).
fn finish(mut body: Vec<u8>, binary: Option<Vec<u8>>) -> Result<Encoded, serde_json::Error> {
    let Some(binary) = binary else {
        return Ok(Encoded { body, json_len: None });
    };
    let json_len = body.len();
    body.extend_from_slice(&binary);
    Ok(Encoded { body, json_len: Some(json_len) })
}
