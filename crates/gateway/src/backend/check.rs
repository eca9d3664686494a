//! Known-answer checks at load: a model is served only if it reproduces the outputs recorded
//! beside it (made by the framework it was trained in), within the file's tolerance.

use std::{path::Path, sync::Arc};

use serde::Deserialize;
use serde_json::value::RawValue;

use super::{BackendError, Model, Source, load_error};
use crate::{
    authz,
    oip::{self, Limits, TensorData},
};

#[derive(Deserialize)]
struct ChecksFile<'a> {
    tolerance: f64,
    #[serde(borrow)]
    cases: Vec<Case<'a>>,
}

#[derive(Deserialize)]
struct Case<'a> {
    #[serde(borrow)]
    inputs: &'a RawValue,
    #[serde(borrow)]
    outputs: &'a RawValue,
}

/// What the checks showed.
#[derive(Debug, Clone, Copy)]
pub struct Checked {
    pub cases: usize,
    /// The slowest case (best of three runs), and its input elements.
    pub slowest: std::time::Duration,
    pub largest_elements: u64,
}

/// Runs every case; returns what passed and how fast, or the first disagreement.
pub fn run(model: &Arc<Model>, path: &Path, limits: &Limits) -> Result<Checked, BackendError> {
    let config = &model.config;
    let text = std::fs::read_to_string(path)
        .map_err(|e| load_error(config, format!("cannot read checks file {}: {e}", path.display())))?;
    let file: ChecksFile<'_> = serde_json::from_str(&text)
        .map_err(|e| load_error(config, format!("checks file {} is not valid: {e}", path.display())))?;
    if file.cases.is_empty() {
        return Err(load_error(config, format!("checks file {} has no cases", path.display())));
    }
    let Source::Local { metadata, backend, .. } = &model.source else {
        return Err(load_error(config, "checks run on local models only"));
    };
    let policy = model.input_policy(u64::MAX);
    let mut slowest = std::time::Duration::ZERO;
    let mut largest_elements = 0u64;
    for (index, case) in file.cases.iter().enumerate() {
        // Both sides are written as protocol tensors, so the request decoder reads them.
        let request =
            decode(case.inputs, limits).map_err(|e| load_error(config, format!("check {index}: inputs: {e}")))?;
        let expected =
            decode(case.outputs, limits).map_err(|e| load_error(config, format!("check {index}: outputs: {e}")))?;
        metadata.validate(&request, policy).map_err(|e| load_error(config, format!("check {index}: {e}")))?;
        let grant = authz::Grant::for_load_check(model);
        largest_elements = largest_elements.max(super::input_elements(&request.inputs));
        // Best of three: the first run warms caches.
        let mut best = std::time::Duration::MAX;
        let mut outputs = Vec::new();
        for _ in 0..3 {
            let started = std::time::Instant::now();
            outputs = backend
                .run(&grant, request.inputs.clone())
                .map_err(|e| load_error(config, format!("check {index}: {e}")))?;
            best = best.min(started.elapsed());
        }
        slowest = slowest.max(best);
        for want in &expected.inputs {
            let Some(got) = outputs.iter().find(|tensor| tensor.name == want.name) else {
                return Err(load_error(config, format!("check {index}: the model gives no output '{}'", want.name)));
            };
            if got.shape != want.shape {
                return Err(load_error(
                    config,
                    format!(
                        "check {index}: output '{}' has shape {:?}, expected {:?}",
                        want.name, got.shape, want.shape
                    ),
                ));
            }
            if let Some(difference) = max_difference(&got.data, &want.data) {
                // NaN (a NaN output) fails too.
                if difference.is_nan() || difference > file.tolerance {
                    return Err(load_error(
                        config,
                        format!(
                            "check {index}: output '{}' differs from the known answer by {difference}, more than the tolerance {}",
                            want.name, file.tolerance
                        ),
                    ));
                }
            } else {
                return Err(load_error(
                    config,
                    format!(
                        "check {index}: output '{}' is {}, expected {}",
                        want.name,
                        got.data.datatype().as_str(),
                        want.data.datatype().as_str()
                    ),
                ));
            }
        }
    }
    Ok(Checked { cases: file.cases.len(), slowest, largest_elements })
}

fn decode(tensors: &RawValue, limits: &Limits) -> Result<oip::InferRequest, oip::DecodeError> {
    let body = format!(r#"{{"inputs":{}}}"#, tensors.get());
    oip::decode_request(body.as_bytes(), None, limits)
}

/// The largest absolute difference between two tensors of one datatype; `None` if the
/// datatypes differ. Integers and booleans must match exactly (difference 0 or infinity).
fn max_difference(got: &TensorData, want: &TensorData) -> Option<f64> {
    fn worst(pairs: impl Iterator<Item = (f64, f64)>) -> f64 {
        let mut worst = 0.0f64;
        for (a, b) in pairs {
            let difference = if a == b { 0.0 } else { (a - b).abs() };
            if difference.is_nan() {
                return f64::NAN;
            }
            worst = worst.max(difference);
        }
        worst
    }
    #[expect(clippy::cast_precision_loss, reason = "comparing values, not storing them")]
    let difference = match (got, want) {
        (TensorData::Fp32(a), TensorData::Fp32(b)) => {
            worst(a.iter().zip(b).map(|(&x, &y)| (f64::from(x), f64::from(y))))
        }
        (TensorData::Fp64(a), TensorData::Fp64(b)) => worst(a.iter().zip(b).map(|(&x, &y)| (x, y))),
        (TensorData::Int64(a), TensorData::Int64(b)) => worst(a.iter().zip(b).map(|(&x, &y)| (x as f64, y as f64))),
        (TensorData::Int32(a), TensorData::Int32(b)) => {
            worst(a.iter().zip(b).map(|(&x, &y)| (f64::from(x), f64::from(y))))
        }
        (a, b) if a.datatype() == b.datatype() => {
            if a == b {
                0.0
            } else {
                f64::INFINITY
            }
        }
        _ => return None,
    };
    Some(difference)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn differences_are_measured_per_datatype() {
        let a = TensorData::Fp32(vec![0.5, 0.25]);
        let b = TensorData::Fp32(vec![0.5, 0.2500001]);
        assert!(max_difference(&a, &b).unwrap() < 1e-6);
        assert_eq!(max_difference(&TensorData::Int64(vec![1]), &TensorData::Int64(vec![2])), Some(1.0));
        assert_eq!(max_difference(&TensorData::Int64(vec![1]), &TensorData::Fp32(vec![1.0])), None);
        assert_eq!(
            max_difference(&TensorData::Fp32(vec![f32::NAN]), &TensorData::Fp32(vec![0.0])).map(f64::is_nan),
            Some(true)
        );
    }
}
