//! The raw pass: printable runs of bytes, like `strings`, in ASCII and in UTF-16LE. Every file
//! that no structured decoder reads, and every file a decoder gave up on, is read this way; the
//! Mach-O and ELF reader uses it for the sections it picks.

use std::ops::ControlFlow;

/// A longer run is emitted in pieces of this many bytes (characters for UTF-16)...
const PIECE: usize = 64 * 1024;
/// ...each overlapping the previous one by this many, so a key across a cut is whole in one.
const PIECE_OVERLAP: usize = 256;

/// Calls `each(offset, run)` for every run of at least `min_len` printable ASCII characters
/// (0x20 to 0x7e and tab) in `bytes`, and for every run of at least `min_len` such characters
/// stored as UTF-16LE (each followed by a zero byte), given converted to ASCII with the offset of
/// its first byte. A run longer than 64 KiB comes in pieces of 64 KiB that overlap by 256 bytes,
/// so a key across a cut is still whole in one piece.
pub fn printable_runs(bytes: &[u8], min_len: usize, mut each: impl FnMut(usize, &str)) {
    let _ = scan_runs(bytes, min_len, &mut |offset, run| {
        each(offset, run);
        ControlFlow::Continue(())
    });
}

/// The loop behind [`printable_runs`]: one pass that keeps, without branching, the length of
/// the ASCII run ending at each byte and the length of the UTF-16LE run ending at each byte pair
/// (pairs starting at even and at odd offsets are counted separately). The only branches ask
/// whether a run at least `min_len` long just ended, which is rare, so even random bytes are
/// predicted well. Nothing is allocated per byte; a UTF-16 run is converted into one reused
/// buffer when it ends.
pub(crate) fn scan_runs(
    bytes: &[u8],
    min_len: usize,
    each: &mut dyn FnMut(usize, &str) -> ControlFlow<()>,
) -> ControlFlow<()> {
    let min_len = min_len.max(1);
    let mut ascii = 0usize;
    // The UTF-16 runs of the pair ending at this byte and of the pair ending at the next one;
    // swapped at every byte.
    let (mut this_parity, mut other_parity) = (0usize, 0usize);
    let mut previous_printable = 0usize;
    let mut buffer = String::new();
    for (i, &byte) in bytes.iter().enumerate() {
        // All ones if printable, else zero; runs are extended with a mask rather than a branch.
        let printable = 0usize.wrapping_sub(usize::from(PRINTABLE[usize::from(byte)]));
        if (ascii >= min_len) & (printable == 0) {
            emit_ascii(bytes, i - ascii, i, each)?;
        }
        ascii = (ascii + 1) & printable;
        // The pair (i - 1, i) is a UTF-16LE character if byte i - 1 is printable and i is zero;
        // it continues the run of pairs starting on the same parity.
        let pair = previous_printable & 0usize.wrapping_sub(usize::from(byte == 0));
        if (this_parity >= min_len) & (pair == 0) {
            // The run's last pair was (i - 3, i - 2).
            emit_wide(bytes, i - 1 - 2 * this_parity, this_parity, &mut buffer, each)?;
        }
        this_parity = (this_parity + 1) & pair;
        std::mem::swap(&mut this_parity, &mut other_parity);
        previous_printable = printable;
    }
    // After the swap, `other_parity` holds the run whose last pair ends at the last byte, and
    // `this_parity` the one ending at the byte before.
    let wide = [(other_parity, 0), (this_parity, 1)];
    let len = bytes.len();
    if ascii >= min_len {
        emit_ascii(bytes, len - ascii, len, each)?;
    }
    for (chars, back) in wide {
        if chars >= min_len {
            let last = len - 1 - back;
            emit_wide(bytes, last + 1 - 2 * chars, chars, &mut buffer, each)?;
        }
    }
    ControlFlow::Continue(())
}

/// Which bytes count as printable: 0x20 to 0x7e, tab, and line breaks, so a multi-line string
/// in a binary (a PEM private key in `.rodata` or `__cstring`) stays one run.
static PRINTABLE: [bool; 256] = {
    let mut table = [false; 256];
    let mut byte = 0x20;
    while byte <= 0x7e {
        table[byte] = true;
        byte += 1;
    }
    table[b'\t' as usize] = true;
    table[b'\n' as usize] = true;
    table[b'\r' as usize] = true;
    table
};

fn emit_ascii(
    bytes: &[u8],
    start: usize,
    end: usize,
    each: &mut dyn FnMut(usize, &str) -> ControlFlow<()>,
) -> ControlFlow<()> {
    match bytes.get(start..end).and_then(|run| std::str::from_utf8(run).ok()) {
        Some(run) => emit_pieces(run, start, 1, each),
        None => ControlFlow::Continue(()),
    }
}

fn emit_wide(
    bytes: &[u8],
    start: usize,
    chars: usize,
    buffer: &mut String,
    each: &mut dyn FnMut(usize, &str) -> ControlFlow<()>,
) -> ControlFlow<()> {
    buffer.clear();
    let wide = bytes.get(start..).unwrap_or_default().iter().step_by(2).take(chars);
    buffer.extend(wide.map(|&byte| char::from(byte)));
    emit_pieces(buffer, start, 2, each)
}

/// Emits `run` (ASCII, found at byte `offset`, `stride` bytes per character) whole, or in
/// overlapping pieces if it is longer than [`PIECE`].
fn emit_pieces(
    run: &str,
    offset: usize,
    stride: usize,
    each: &mut dyn FnMut(usize, &str) -> ControlFlow<()>,
) -> ControlFlow<()> {
    let mut start = 0;
    loop {
        let end = run.len().min(start + PIECE);
        if let Some(piece) = run.get(start..end) {
            each(offset + start * stride, piece)?;
        }
        if end == run.len() {
            return ControlFlow::Continue(());
        }
        start += PIECE - PIECE_OVERLAP;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const KEY: &str = "AIzaSyD-planted-key-0123456789abcdefghi";

    fn runs(bytes: &[u8], min_len: usize) -> Vec<(usize, String)> {
        let mut out = Vec::new();
        printable_runs(bytes, min_len, |offset, run| out.push((offset, run.to_owned())));
        out
    }

    #[test]
    fn printable_run_at_the_end_of_the_buffer_is_emitted() {
        assert_eq!(runs(b"\x00\x01abcdefgh", 8), [(2, "abcdefgh".to_owned())]);
        assert_eq!(runs(b"abcdefgh", 8), [(0, "abcdefgh".to_owned())]);
    }

    #[test]
    fn printable_run_of_exactly_min_len_is_emitted_and_one_shorter_is_not() {
        assert_eq!(runs(b"abcdefgh\x00abcdefg\x00", 8), [(0, "abcdefgh".to_owned())]);
        assert_eq!(runs(b"abcdefg", 8), []);
        assert_eq!(runs(b"", 8), []);
        // A minimum of zero means one.
        assert_eq!(runs(b"a\x01b", 0), [(0, "a".to_owned()), (2, "b".to_owned())]);
    }

    #[test]
    fn tab_and_line_breaks_are_printable_and_high_bytes_end_a_run() {
        assert_eq!(runs(b"key\tvalue1", 8), [(0, "key\tvalue1".to_owned())]);
        assert_eq!(
            runs(b"abcdefgh\nijklmnop\xe9qrstuvwx", 8),
            [(0, "abcdefgh\nijklmnop".to_owned()), (18, "qrstuvwx".to_owned())]
        );
    }

    #[test]
    fn utf16le_runs_are_converted_at_even_and_odd_offsets() {
        let wide: Vec<u8> = KEY.encode_utf16().flat_map(u16::to_le_bytes).collect();
        for pad in [0, 1, 2, 3] {
            let mut bytes = vec![0xffu8; pad];
            bytes.extend_from_slice(&wide);
            bytes.extend_from_slice(b"\xff\xff");
            assert_eq!(runs(&bytes, 8), [(pad, KEY.to_owned())], "pad {pad}");
        }
        // Exactly min_len wide characters, ending the buffer.
        assert_eq!(runs(b"a\0b\0c\0d\0", 4), [(0, "abcd".to_owned())]);
        assert_eq!(runs(b"a\0b\0c\0", 4), []);
    }

    #[test]
    fn long_run_is_split_with_overlap_and_a_key_across_the_cut_is_whole() {
        let mut bytes = vec![b'x'; 200 * 1024];
        let key_at = PIECE - 10;
        bytes[key_at..key_at + KEY.len()].copy_from_slice(KEY.as_bytes());
        let pieces = runs(&bytes, 8);
        assert_eq!(pieces.len(), 4);
        for pair in pieces.windows(2) {
            let ((first_at, first), (next_at, _)) = (&pair[0], &pair[1]);
            assert_eq!(first.len(), PIECE);
            assert_eq!(*next_at, first_at + PIECE - PIECE_OVERLAP);
        }
        let (last_at, last) = &pieces[3];
        assert_eq!(last_at + last.len(), bytes.len());
        assert!(pieces.iter().any(|(_, piece)| piece.contains(KEY)));
        assert!(pieces.iter().all(|(at, piece)| piece.as_bytes() == &bytes[*at..at + piece.len()]));
    }

    proptest! {
        #[test]
        fn printable_runs_are_printable_long_enough_and_located(
            bytes in proptest::collection::vec(prop::sample::select(vec![0u8, b'a', b'Z', b'\t', b'\n', 0xff]), 0..512),
            min_len in 1usize..6,
        ) {
            for (offset, run) in runs(&bytes, min_len) {
                prop_assert!(run.len() >= min_len);
                prop_assert!(run.bytes().all(|b| PRINTABLE[usize::from(b)]));
                let ascii = bytes.get(offset..offset + run.len()) == Some(run.as_bytes());
                let wide = run.bytes().enumerate().all(|(i, b)| {
                    bytes.get(offset + 2 * i) == Some(&b) && bytes.get(offset + 2 * i + 1) == Some(&0)
                });
                prop_assert!(ascii || wide);
            }
        }
    }
}
