//! Response encoding: JSON, with outputs the client asked for in binary appended after it.

use serde::Serialize;

use super::{InferResponse, Parameter, tensor::JsonData};

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
    let mut binary: Vec<u8> = Vec::new();
    let mut outputs = Vec::with_capacity(response.outputs.len());
    for (tensor, as_binary) in &response.outputs {
        let (parameters, data) = if *as_binary {
            let bytes = tensor.data.to_le_bytes();
            let size = Parameter::Int(i64::try_from(bytes.len()).unwrap_or(i64::MAX));
            binary.extend_from_slice(&bytes);
            (Some(BinaryParameters { binary_data_size: size }), None)
        } else {
            (None, Some(JsonData(&tensor.data)))
        };
        outputs.push(WireOutput {
            name: &tensor.name,
            datatype: tensor.data.datatype().as_str(),
            shape: &tensor.shape,
            parameters,
            data,
        });
    }
    let wire = WireResponse {
        model_name: &response.model_name,
        model_version: response.model_version.as_deref(),
        id: response.id.as_deref(),
        outputs,
    };
    let mut body = serde_json::to_vec(&wire)?;
    if response.outputs.iter().any(|(_, as_binary)| *as_binary) {
        let json_len = body.len();
        body.extend_from_slice(&binary);
        Ok(Encoded { body, json_len: Some(json_len) })
    } else {
        Ok(Encoded { body, json_len: None })
    }
}
