//! The Open Inference Protocol request decoder, JSON and binary: it must never panic, and what
//! it accepts must respect the limits it was given.
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
    if let Ok(request) = gateway::oip::decode_request(body, split, &limits) {
        for tensor in &request.inputs {
            let count: u64 = tensor.shape.iter().product();
            assert_eq!(count, tensor.data.len() as u64);
            assert!(count <= limits.max_tensor_elements);
            assert!(tensor.shape.len() <= limits.max_rank);
        }
    }
});
