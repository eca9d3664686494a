//! ONNX Runtime, loaded at run time from a shared library (the `onnxruntime` Python wheel ships
//! one): for tree ensembles and the rest of ONNX-ML, where tract is wrong or slow.
//!
//! Nothing is downloaded: the library path comes from `inference.onnxruntime_library` or the
//! `ORT_DYLIB_PATH` environment variable. ONNX Runtime sessions need exclusive access to run, so
//! each model keeps one single-threaded session per pool thread.

use std::{
    path::{Path, PathBuf},
    sync::{Mutex, OnceLock, PoisonError},
};

use ort::{
    environment::Environment,
    session::{Session, builder::GraphOptimizationLevel},
    value::{DynValue, Tensor as OrtTensor, TensorElementType, ValueType},
};

use super::{Backend, BackendError, load_error};
use crate::{
    authz::Infer,
    backend::Grant,
    config::ModelConfig,
    oip::{DataType, Tensor, TensorData, TensorMeta},
};

/// The process-wide ONNX Runtime environment. The library can be loaded once per process, so
/// the first path wins and a later, different path is an error.
static ENVIRONMENT: OnceLock<Result<(PathBuf, Environment), String>> = OnceLock::new();

fn environment(library: &Path) -> Result<&'static Environment, String> {
    let loaded = ENVIRONMENT.get_or_init(|| {
        let environment = ort::init_from(library)
            .map_err(|e| format!("cannot load the ONNX Runtime library {}: {e}", library.display()))?
            .with_name("portcullis")
            .with_telemetry(false)
            .build()
            .map_err(|e| format!("cannot start ONNX Runtime: {e}"))?;
        Ok((library.to_owned(), environment))
    });
    match loaded {
        Ok((path, environment)) if path == library => Ok(environment),
        Ok((path, _)) => {
            Err(format!("ONNX Runtime is already loaded from {}; one process loads one library", path.display()))
        }
        Err(message) => Err(message.clone()),
    }
}

pub struct OrtBackend {
    sessions: Vec<Mutex<Session>>,
    inputs: Vec<TensorMeta>,
    outputs: Vec<TensorMeta>,
}

impl OrtBackend {
    pub fn load(
        config: &ModelConfig,
        path: &Path,
        library: Option<&Path>,
        threads: usize,
    ) -> Result<OrtBackend, BackendError> {
        let library = match library {
            Some(path) => path.to_owned(),
            None => std::env::var_os("ORT_DYLIB_PATH").map(PathBuf::from).ok_or_else(|| {
                load_error(
                    config,
                    "runtime = \"onnxruntime\" needs the ONNX Runtime library: set inference.onnxruntime_library \
                     or ORT_DYLIB_PATH to libonnxruntime.so (pip install onnxruntime ships it)",
                )
            })?,
        };
        let environment = environment(&library).map_err(|m| load_error(config, m))?;
        let fail = |e: ort::Error| load_error(config, format!("ONNX Runtime cannot load {}: {e}", path.display()));
        let mut sessions = Vec::with_capacity(threads);
        for _ in 0..threads.max(1) {
            let session = Session::builder(environment)
                .and_then(|builder| {
                    builder.with_optimization_level(GraphOptimizationLevel::All).map_err(ort::Error::from)
                })
                .and_then(|builder| builder.with_intra_threads(1).map_err(ort::Error::from))
                .and_then(|builder| builder.with_inter_threads(1).map_err(ort::Error::from))
                .and_then(|mut builder| builder.commit_from_file(path))
                .map_err(fail)?;
            sessions.push(Mutex::new(session));
        }
        let first = sessions.first().ok_or_else(|| load_error(config, "no session"))?;
        let session = first.lock().unwrap_or_else(PoisonError::into_inner);
        let inputs =
            session.inputs().iter().map(|outlet| meta(outlet.name(), outlet.dtype())).collect::<Result<Vec<_>, _>>();
        let outputs =
            session.outputs().iter().map(|outlet| meta(outlet.name(), outlet.dtype())).collect::<Result<Vec<_>, _>>();
        drop(session);
        Ok(OrtBackend {
            inputs: inputs.map_err(|m| load_error(config, m))?,
            outputs: outputs.map_err(|m| load_error(config, m))?,
            sessions,
        })
    }
}

fn meta(name: &str, value_type: &ValueType) -> Result<TensorMeta, String> {
    let ValueType::Tensor { ty, shape, .. } = value_type else {
        return Err(format!("'{name}' is not a tensor (a ZipMap output? export the model with zipmap disabled)"));
    };
    let datatype =
        protocol_type(*ty).ok_or_else(|| format!("'{name}' has element type {ty:?}, which is not supported"))?;
    Ok(TensorMeta { name: name.to_owned(), datatype, shape: shape.iter().map(|&dim| dim.max(-1)).collect() })
}

fn protocol_type(ty: TensorElementType) -> Option<DataType> {
    Some(match ty {
        TensorElementType::Bool => DataType::Bool,
        TensorElementType::Uint8 => DataType::Uint8,
        TensorElementType::Uint16 => DataType::Uint16,
        TensorElementType::Uint32 => DataType::Uint32,
        TensorElementType::Uint64 => DataType::Uint64,
        TensorElementType::Int8 => DataType::Int8,
        TensorElementType::Int16 => DataType::Int16,
        TensorElementType::Int32 => DataType::Int32,
        TensorElementType::Int64 => DataType::Int64,
        TensorElementType::Float32 => DataType::Fp32,
        TensorElementType::Float64 => DataType::Fp64,
        TensorElementType::String => DataType::Bytes,
        _ => return None,
    })
}

fn to_ort(tensor: Tensor) -> Result<DynValue, BackendError> {
    let shape: Vec<i64> = tensor
        .shape
        .iter()
        .map(|&dim| i64::try_from(dim))
        .collect::<Result<_, _>>()
        .map_err(|_| BackendError::Run("shape out of range".into()))?;
    let fail = |e: ort::Error| BackendError::Run(format!("building input '{}': {e}", tensor.name));
    let value = match tensor.data {
        TensorData::Bool(values) => OrtTensor::from_array((shape, values)).map(OrtTensor::into_dyn),
        TensorData::Uint8(values) => OrtTensor::from_array((shape, values)).map(OrtTensor::into_dyn),
        TensorData::Uint16(values) => OrtTensor::from_array((shape, values)).map(OrtTensor::into_dyn),
        TensorData::Uint32(values) => OrtTensor::from_array((shape, values)).map(OrtTensor::into_dyn),
        TensorData::Uint64(values) => OrtTensor::from_array((shape, values)).map(OrtTensor::into_dyn),
        TensorData::Int8(values) => OrtTensor::from_array((shape, values)).map(OrtTensor::into_dyn),
        TensorData::Int16(values) => OrtTensor::from_array((shape, values)).map(OrtTensor::into_dyn),
        TensorData::Int32(values) => OrtTensor::from_array((shape, values)).map(OrtTensor::into_dyn),
        TensorData::Int64(values) => OrtTensor::from_array((shape, values)).map(OrtTensor::into_dyn),
        TensorData::Fp32(values) => OrtTensor::from_array((shape, values)).map(OrtTensor::into_dyn),
        TensorData::Fp64(values) => OrtTensor::from_array((shape, values)).map(OrtTensor::into_dyn),
        TensorData::Bytes(values) => {
            let strings = values
                .into_iter()
                .map(String::from_utf8)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|_| BackendError::Run("BYTES input is not UTF-8 text".into()))?;
            OrtTensor::from_string_array((shape, strings.as_slice())).map(OrtTensor::into_dyn)
        }
        TensorData::Fp16(_) | TensorData::Bf16(_) => {
            return Err(BackendError::Run("FP16 and BF16 inputs are not supported by this runtime".into()));
        }
    };
    value.map_err(fail)
}

fn from_ort(name: &str, value: &DynValue) -> Result<Tensor, BackendError> {
    let fail = |e: ort::Error| BackendError::Run(format!("reading output '{name}': {e}"));
    macro_rules! extract {
        ($ty:ty, $variant:ident) => {{
            let (shape, values) = value.try_extract_tensor::<$ty>().map_err(fail)?;
            (
                shape.iter().map(|&dim| u64::try_from(dim).unwrap_or(0)).collect::<Vec<u64>>(),
                TensorData::$variant(values.to_vec()),
            )
        }};
    }
    let element = match value.dtype() {
        ValueType::Tensor { ty, .. } => *ty,
        _ => {
            return Err(BackendError::Run(format!("output '{name}' is not a tensor")));
        }
    };
    let (shape, data) = match element {
        TensorElementType::Bool => extract!(bool, Bool),
        TensorElementType::Uint8 => extract!(u8, Uint8),
        TensorElementType::Uint16 => extract!(u16, Uint16),
        TensorElementType::Uint32 => extract!(u32, Uint32),
        TensorElementType::Uint64 => extract!(u64, Uint64),
        TensorElementType::Int8 => extract!(i8, Int8),
        TensorElementType::Int16 => extract!(i16, Int16),
        TensorElementType::Int32 => extract!(i32, Int32),
        TensorElementType::Int64 => extract!(i64, Int64),
        TensorElementType::Float32 => extract!(f32, Fp32),
        TensorElementType::Float64 => extract!(f64, Fp64),
        TensorElementType::String => {
            let (shape, strings) = value.try_extract_strings().map_err(fail)?;
            (
                shape.iter().map(|&dim| u64::try_from(dim).unwrap_or(0)).collect(),
                TensorData::Bytes(strings.into_iter().map(String::into_bytes).collect()),
            )
        }
        other => {
            return Err(BackendError::Run(format!("output '{name}' has unsupported type {other:?}")));
        }
    };
    Ok(Tensor { name: name.to_owned(), shape, data })
}

impl std::fmt::Debug for OrtBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OrtBackend")
            .field("inputs", &self.inputs)
            .field("outputs", &self.outputs)
            .finish_non_exhaustive()
    }
}

impl Backend for OrtBackend {
    fn signature(&self) -> (&[TensorMeta], &[TensorMeta]) {
        (&self.inputs, &self.outputs)
    }

    fn run(&self, _grant: &Grant<Infer>, inputs: Vec<Tensor>) -> Result<Vec<Tensor>, BackendError> {
        let mut named: Vec<(String, DynValue)> = Vec::with_capacity(inputs.len());
        for tensor in inputs {
            let name = tensor.name.clone();
            named.push((name, to_ort(tensor)?));
        }
        // The pool runs at most one inference per session, so a free session is almost always
        // found on the first pass; waiting on the first is the fallback.
        let mut session = self
            .sessions
            .iter()
            .find_map(|slot| slot.try_lock().ok())
            .or_else(|| self.sessions.first().map(|slot| slot.lock().unwrap_or_else(PoisonError::into_inner)))
            .ok_or_else(|| BackendError::Run("no session".into()))?;
        let outputs = session.run(named).map_err(|e| BackendError::Run(e.to_string()))?;
        self.outputs
            .iter()
            .map(|meta| {
                let value = outputs
                    .get(&meta.name)
                    .ok_or_else(|| BackendError::Run(format!("output '{}' is missing", meta.name)))?;
                from_ort(&meta.name, value)
            })
            .collect()
    }
}
