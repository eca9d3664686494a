//! tract: the pure-Rust runtime, the default for neural nets and linear models.

use std::sync::Arc;

use tract_onnx::prelude::{
    DatumType, Framework, InferenceModelExt, IntoRunnable, IntoTValue, TValue, Tensor as TractTensor, TypedModel,
    TypedRunnableModel,
    tract_ndarray::{ArrayD, IxDyn},
    tvec,
};

use super::{Backend, BackendError, load_error};
use crate::{
    authz::Infer,
    backend::Grant,
    config::ModelConfig,
    oip::{DataType, Tensor, TensorData, TensorMeta},
};

pub struct TractBackend {
    plan: Arc<TypedRunnableModel>,
    inputs: Vec<TensorMeta>,
    outputs: Vec<TensorMeta>,
}

impl TractBackend {
    /// Loads and optimises an ONNX file. An operator tract lacks is named in the error.
    pub fn load(config: &ModelConfig, path: &std::path::Path) -> Result<TractBackend, BackendError> {
        let fail = |stage: &str, error: tract_onnx::prelude::TractError| {
            load_error(
                config,
                format!(
                    "tract cannot {stage} {}: {error:#} (if the model uses ONNX-ML operators such as tree \
                     ensembles, set runtime = \"onnxruntime\" for it)",
                    path.display()
                ),
            )
        };
        let model = tract_onnx::onnx().model_for_path(path).map_err(|e| fail("read", e))?;
        let typed: TypedModel = model.into_typed().map_err(|e| fail("type", e))?;
        let inputs = signature(&typed, true).map_err(|m| load_error(config, m))?;
        let outputs = signature(&typed, false).map_err(|m| load_error(config, m))?;
        let plan = typed
            .into_decluttered()
            .and_then(|model| model.into_optimized())
            .and_then(|model| model.into_runnable())
            .map_err(|e| fail("optimise", e))?;
        Ok(TractBackend { plan, inputs, outputs })
    }
}

/// The model's inputs (or outputs) as protocol tensor descriptions.
fn signature(model: &TypedModel, inputs: bool) -> Result<Vec<TensorMeta>, String> {
    let outlets = if inputs { model.input_outlets() } else { model.output_outlets() }.map_err(|e| e.to_string())?;
    let mut metas = Vec::with_capacity(outlets.len());
    for &outlet in outlets {
        let fact = model.outlet_fact(outlet).map_err(|e| e.to_string())?;
        let name = model.outlet_label(outlet).map_or_else(|| model.node(outlet.node).name.clone(), str::to_owned);
        let datatype = protocol_type(fact.datum_type).ok_or_else(|| {
            format!("tensor '{name}' has datatype {:?}, which the protocol cannot carry", fact.datum_type)
        })?;
        let shape = fact.shape.iter().map(|dim| dim.to_i64().unwrap_or(-1)).collect();
        metas.push(TensorMeta { name, datatype, shape });
    }
    Ok(metas)
}

fn protocol_type(datum: DatumType) -> Option<DataType> {
    Some(match datum {
        DatumType::Bool => DataType::Bool,
        DatumType::U8 => DataType::Uint8,
        DatumType::U16 => DataType::Uint16,
        DatumType::U32 => DataType::Uint32,
        DatumType::U64 => DataType::Uint64,
        DatumType::I8 => DataType::Int8,
        DatumType::I16 => DataType::Int16,
        DatumType::I32 => DataType::Int32,
        DatumType::I64 => DataType::Int64,
        DatumType::F16 => DataType::Fp16,
        DatumType::F32 => DataType::Fp32,
        DatumType::F64 => DataType::Fp64,
        DatumType::String => DataType::Bytes,
        _ => return None,
    })
}

fn to_tract(tensor: Tensor) -> Result<TValue, BackendError> {
    let shape: Vec<usize> = tensor
        .shape
        .iter()
        .map(|&dim| usize::try_from(dim))
        .collect::<Result<_, _>>()
        .map_err(|_| BackendError::Run("shape does not fit in memory".into()))?;
    fn array<T: tract_onnx::prelude::Datum>(shape: Vec<usize>, values: Vec<T>) -> Result<TractTensor, BackendError> {
        ArrayD::from_shape_vec(IxDyn(&shape), values)
            .map(TractTensor::from)
            .map_err(|e| BackendError::Run(format!("tensor shape: {e}")))
    }
    let tract = match tensor.data {
        TensorData::Bool(values) => array(shape, values)?,
        TensorData::Uint8(values) => array(shape, values)?,
        TensorData::Uint16(values) => array(shape, values)?,
        TensorData::Uint32(values) => array(shape, values)?,
        TensorData::Uint64(values) => array(shape, values)?,
        TensorData::Int8(values) => array(shape, values)?,
        TensorData::Int16(values) => array(shape, values)?,
        TensorData::Int32(values) => array(shape, values)?,
        TensorData::Int64(values) => array(shape, values)?,
        TensorData::Fp16(values) => array(shape, values)?,
        TensorData::Fp32(values) => array(shape, values)?,
        TensorData::Fp64(values) => array(shape, values)?,
        TensorData::Bf16(_) => {
            return Err(BackendError::Run("BF16 inputs are not supported by tract".into()));
        }
        TensorData::Bytes(values) => {
            let strings = values
                .into_iter()
                .map(String::from_utf8)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|_| BackendError::Run("BYTES input is not UTF-8 text".into()))?;
            array(shape, strings)?
        }
    };
    Ok(tract.into_tvalue())
}

fn from_tract(name: String, value: &TractTensor) -> Result<Tensor, BackendError> {
    let shape = value.shape().iter().map(|&dim| dim as u64).collect();
    fn values<T: tract_onnx::prelude::Datum + Clone>(value: &TractTensor) -> Result<Vec<T>, BackendError> {
        value
            .to_plain_array_view::<T>()
            .map(|view| view.iter().cloned().collect())
            .map_err(|e| BackendError::Run(format!("reading output: {e}")))
    }
    let data = match value.datum_type() {
        DatumType::Bool => TensorData::Bool(values(value)?),
        DatumType::U8 => TensorData::Uint8(values(value)?),
        DatumType::U16 => TensorData::Uint16(values(value)?),
        DatumType::U32 => TensorData::Uint32(values(value)?),
        DatumType::U64 => TensorData::Uint64(values(value)?),
        DatumType::I8 => TensorData::Int8(values(value)?),
        DatumType::I16 => TensorData::Int16(values(value)?),
        DatumType::I32 => TensorData::Int32(values(value)?),
        DatumType::I64 => TensorData::Int64(values(value)?),
        DatumType::F16 => TensorData::Fp16(values(value)?),
        DatumType::F32 => TensorData::Fp32(values(value)?),
        DatumType::F64 => TensorData::Fp64(values(value)?),
        DatumType::String => TensorData::Bytes(values::<String>(value)?.into_iter().map(String::into_bytes).collect()),
        other => {
            return Err(BackendError::Run(format!("output '{name}' has unsupported datatype {other:?}")));
        }
    };
    Ok(Tensor { name, shape, data })
}

impl std::fmt::Debug for TractBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TractBackend")
            .field("inputs", &self.inputs)
            .field("outputs", &self.outputs)
            .finish_non_exhaustive()
    }
}

impl Backend for TractBackend {
    fn signature(&self) -> (&[TensorMeta], &[TensorMeta]) {
        (&self.inputs, &self.outputs)
    }

    fn run(&self, _grant: &Grant<Infer>, mut inputs: Vec<Tensor>) -> Result<Vec<Tensor>, BackendError> {
        let mut ordered = tvec![];
        for meta in &self.inputs {
            let position = inputs
                .iter()
                .position(|tensor| tensor.name == meta.name)
                .ok_or_else(|| BackendError::Run(format!("input '{}' is missing", meta.name)))?;
            ordered.push(to_tract(inputs.swap_remove(position))?);
        }
        let results = self.plan.run(ordered).map_err(|e| BackendError::Run(format!("{e:#}")))?;
        self.outputs.iter().zip(results.iter()).map(|(meta, value)| from_tract(meta.name.clone(), value)).collect()
    }
}
