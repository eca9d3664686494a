//! The Open Inference Protocol decoders (requests from clients, responses from upstreams), JSON
//! and binary: they must never panic, and what they accept must respect the limits given.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: &[u8]| {
    let limits = gateway::oip::Limits { max_tensor_elements: 4096, ..gateway::oip::Limits::default() };
    // The first two bytes choose where the JSON header ends (Triton's binary extension), or none.
    let (split, body) = match input {
        [a, b, rest @ ..] => {
            let split = usize::from(u16::from_le_bytes([*a, *b]));
            (if split == u16::MAX as usize { None } else { Some(split) }, rest)
        }
        _ => (None, input),
    };
    let check = |tensors: &[gateway::oip::Tensor]| {
        for tensor in tensors {
            let count: u64 = tensor.shape.iter().product();
            assert_eq!(count, tensor.data.len() as u64);
            assert!(count <= limits.max_tensor_elements);
            assert!(tensor.shape.len() <= limits.max_rank);
        }
    };
    if let Ok(request) = gateway::oip::decode_request(body, split, &limits) {
        check(&request.inputs);
    }
    if let Ok(outputs) = gateway::oip::decode_response(body, split, &limits) {
        check(&outputs);
    }
});
