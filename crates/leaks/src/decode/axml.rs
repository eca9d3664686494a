//! Android binary XML reader (`AndroidManifest.xml` and `res/xml/*.xml` inside an APK): every
//! string attribute value and text node, located by element path, with the sibling
//! `android:name` as context so `<meta-data android:name="com.google.android.geo.API_KEY"
//! android:value="AIza…">` comes out as the value named `com.google.android.geo.API_KEY`.
//!
//! The format is the `RES_XML_TYPE` chunk of AOSP's `ResourceTypes.h`
//! (`frameworks/base/libs/androidfw/include/androidfw/ResourceTypes.h`): a string pool, an
//! optional resource map (`RES_XML_RESOURCE_MAP_TYPE`, resource ids for the first pool
//! strings, used here to name attributes whose name string was blanked), namespace chunks
//! (skipped), start and end element chunks (`ResXMLTree_attrExt` with `ResXMLTree_attribute`s)
//! and CDATA chunks. An attribute is emitted as `{element path}@{attribute}`, e.g.
//! `manifest/application/meta-data@value`, named by the element's `name` attribute when it is
//! the `value`, otherwise by its own name; text as `{element path}`. Values that are only
//! references (`@0x7f…`) or numbers are not emitted; resolving references needs the resource
//! table, which is decoded on its own. Elements nest at most 256 deep.

use super::arsc::{Chunk, RES_STRING_POOL_TYPE, StringPool, TYPE_STRING};
use super::{DecodeError, Sink};
use super::{Emitter, cut_name, output_budget};

const FORMAT: &str = "axml";
const RES_XML_TYPE: u16 = 0x0003;
const RES_XML_START_ELEMENT_TYPE: u16 = 0x0102;
const RES_XML_END_ELEMENT_TYPE: u16 = 0x0103;
const RES_XML_CDATA_TYPE: u16 = 0x0104;
const RES_XML_RESOURCE_MAP_TYPE: u16 = 0x0180;
/// `ResXMLTree_node`: the chunk header, a line number and a comment reference.
const NODE_HEADER_MIN: usize = 16;
const ATTRIBUTE_SIZE_MIN: usize = 20;
const NO_STRING: u32 = 0xffff_ffff;
const MAX_DEPTH: usize = 256;

/// Framework attribute ids (`android.R.attr`) for the names the reader uses as context, so a
/// manifest whose attribute name strings were blanked by an obfuscator still reads right.
pub(crate) const ANDROID_ATTRIBUTES: &[(u32, &str)] = &[
    (0x0101_0001, "label"),
    (0x0101_0002, "icon"),
    (0x0101_0003, "name"),
    (0x0101_0024, "value"),
    (0x0101_0025, "resource"),
];

/// Emits the string attributes and text of the document.
pub fn decode(bytes: &[u8], sink: &mut dyn Sink) -> Result<(), DecodeError> {
    decode_within(bytes, sink, output_budget(bytes.len()))
}

fn decode_within(bytes: &[u8], sink: &mut dyn Sink, budget: usize) -> Result<(), DecodeError> {
    let root = Chunk::at(bytes, 0, usize::MAX, FORMAT)?;
    if root.kind != RES_XML_TYPE {
        return Err(DecodeError::new(FORMAT, 0, "not a binary XML document"));
    }
    let mut reader = Reader {
        out: Emitter::new(sink, FORMAT, budget),
        pool: None,
        resource_map: None,
        path: String::new(),
        open: Vec::new(),
    };
    for child in root.children(bytes, FORMAT) {
        let child = child?;
        match child.kind {
            RES_STRING_POOL_TYPE if reader.pool.is_none() => reader.pool = Some(StringPool::parse(&child, FORMAT)?),
            RES_XML_RESOURCE_MAP_TYPE => reader.resource_map = Some(child),
            RES_XML_START_ELEMENT_TYPE => reader.start_element(&child)?,
            RES_XML_END_ELEMENT_TYPE => reader.end_element(),
            RES_XML_CDATA_TYPE => reader.cdata(&child)?,
            // Namespaces (attribute names are emitted without prefixes) and unknown chunks.
            _ => {}
        }
    }
    Ok(())
}

struct Reader<'a, 's> {
    out: Emitter<'s>,
    pool: Option<StringPool<'a>>,
    resource_map: Option<Chunk<'a>>,
    /// The open elements' names joined by `/`.
    path: String,
    /// Per open element: where its name starts in `path`, and its `name` attribute's value.
    open: Vec<(usize, Option<String>)>,
}

impl<'a> Reader<'a, '_> {
    fn pool(&self, chunk: &Chunk<'a>) -> Result<&StringPool<'a>, DecodeError> {
        self.pool.as_ref().ok_or_else(|| DecodeError::new(FORMAT, chunk.offset, "element before the string pool"))
    }

    fn start_element(&mut self, chunk: &Chunk<'a>) -> Result<(), DecodeError> {
        let bad = |at: usize, message: &str| DecodeError::new(FORMAT, chunk.offset.saturating_add(at), message);
        if chunk.header_size < NODE_HEADER_MIN {
            return Err(bad(0, "node header too small"));
        }
        if self.open.len() >= MAX_DEPTH {
            return Err(bad(0, "elements nested deeper than 256"));
        }
        let ext = chunk.header_size;
        let (Some(name), Some(attribute_start), Some(attribute_size), Some(attribute_count)) =
            (chunk.u32(ext + 4), chunk.u16(ext + 8), chunk.u16(ext + 10), chunk.u16(ext + 12))
        else {
            return Err(bad(ext, "element extension past the chunk"));
        };
        let attribute_size = usize::from(attribute_size);
        if attribute_size < ATTRIBUTE_SIZE_MIN {
            return Err(bad(ext + 10, "attribute size too small"));
        }
        let pool = *self.pool(chunk)?;
        let element = cut_name(&pool.get_name(name as usize)?);
        self.out.charge(chunk.offset, element.len())?;

        // Attributes are read (bounded by the chunk) before any is emitted, so the `value`
        // attribute can be named by a `name` attribute that follows it.
        let mut attributes: Vec<(String, String)> = Vec::new();
        for index in 0..usize::from(attribute_count) {
            let at = ext + usize::from(attribute_start) + index * attribute_size;
            let (Some(name), Some(raw), Some(data_type), Some(data)) =
                (chunk.u32(at + 4), chunk.u32(at + 8), chunk.u8(at + 15), chunk.u32(at + 16))
            else {
                return Err(bad(at, "attribute past the chunk"));
            };
            let value = if raw != NO_STRING {
                pool.get(raw as usize)?
            } else if data_type == TYPE_STRING {
                pool.get(data as usize)?
            } else {
                continue;
            };
            let name = self.attribute_name(&pool, name)?;
            self.out.charge(chunk.offset, value.len() + name.len())?;
            attributes.push((name, value));
        }

        let context = attributes.iter().find(|(name, _)| name == "name").map(|(_, value)| value.clone());
        let start = self.path.len();
        if !self.path.is_empty() {
            self.path.push('/');
        }
        self.path.push_str(&element);
        self.open.push((start, context.clone()));
        for (name, value) in &attributes {
            if value.is_empty() {
                continue;
            }
            let label = match (&context, name.as_str()) {
                (Some(context), "value") => context.as_str(),
                _ => name.as_str(),
            };
            self.out.emit(chunk.offset, &format!("{}@{name}", self.path), Some(label), value)?;
        }
        Ok(())
    }

    /// An attribute's local name: the framework name for a known `android.R.attr` id in the
    /// resource map, else the pool string, else the id.
    fn attribute_name(&self, pool: &StringPool<'a>, index: u32) -> Result<String, DecodeError> {
        let id = self
            .resource_map
            .as_ref()
            .and_then(|map| map.u32((index as usize).checked_mul(4)?.checked_add(map.header_size)?));
        if let Some(&(_, known)) = id.and_then(|id| ANDROID_ATTRIBUTES.iter().find(|(known, _)| *known == id)) {
            return Ok(known.to_owned());
        }
        let name = cut_name(&pool.get_name(index as usize)?);
        Ok(match id {
            Some(id) if name.is_empty() => format!("{id:#010x}"),
            _ => name,
        })
    }

    fn end_element(&mut self) {
        // An unmatched end element is ignored: it cannot hide a string.
        if let Some((start, _)) = self.open.pop() {
            self.path.truncate(start);
        }
    }

    fn cdata(&mut self, chunk: &Chunk<'a>) -> Result<(), DecodeError> {
        if chunk.header_size < NODE_HEADER_MIN {
            return Err(DecodeError::new(FORMAT, chunk.offset, "node header too small"));
        }
        let data = chunk
            .u32(chunk.header_size)
            .ok_or_else(|| DecodeError::new(FORMAT, chunk.offset, "text extension past the chunk"))?;
        let text = self.pool(chunk)?.get(data as usize)?;
        self.out.charge(chunk.offset, text.len())?;
        if text.trim().is_empty() {
            return Ok(());
        }
        let context = self.open.last().and_then(|(_, context)| context.clone());
        self.out.emit(chunk.offset, &self.path.clone(), context.as_deref(), &text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::corpus::axml::{Element, build, build_with};
    use crate::decode::MAX_NAME_CHARS;
    use crate::decode::testing::{Found, collect, found};
    use proptest::prelude::*;

    fn run(bytes: &[u8]) -> (Found, Result<(), DecodeError>) {
        run_within(bytes, output_budget(bytes.len()))
    }

    fn run_within(bytes: &[u8], budget: usize) -> (Found, Result<(), DecodeError>) {
        collect(|sink| decode_within(bytes, sink, budget))
    }

    const KEY: &str = "AIzaSyD-planted-key-0123456789abcdefghi";

    fn manifest() -> Element {
        Element::new("manifest").attribute("package", "com.example.app").child(
            Element::new("application")
                .attribute("android:label", "Example")
                .child(
                    Element::new("meta-data")
                        .attribute("android:name", "com.google.android.geo.API_KEY")
                        .attribute("android:value", KEY),
                )
                .child(Element::new("meta-data").attribute("android:value", "value-without-a-name")),
        )
    }

    fn expected() -> Found {
        vec![
            found("manifest@package", Some("package"), "com.example.app"),
            found("manifest/application@label", Some("label"), "Example"),
            found("manifest/application/meta-data@name", Some("name"), "com.google.android.geo.API_KEY"),
            found("manifest/application/meta-data@value", Some("com.google.android.geo.API_KEY"), KEY),
            found("manifest/application/meta-data@value", Some("value"), "value-without-a-name"),
        ]
    }

    #[test]
    fn meta_data_value_is_named_by_its_sibling_name() {
        assert_eq!(run(&build(&manifest())), (expected(), Ok(())));
        assert_eq!(run(&build_with(&manifest(), true)), (expected(), Ok(())));
    }

    #[test]
    fn value_before_name_is_still_named() {
        let root = Element::new("meta-data").attribute("android:value", KEY).attribute("android:name", "api_key");
        let (found_strings, result) = run(&build(&root));
        assert_eq!(result, Ok(()));
        assert!(found_strings.contains(&found("meta-data@value", Some("api_key"), KEY)));
    }

    #[test]
    fn text_is_emitted_with_the_element_path_and_name() {
        let root = Element::new("resources")
            .child(Element::new("string").attribute("name", "backend_secret").child(Element::text(KEY)));
        let (found_strings, result) = run(&build(&root));
        assert_eq!(result, Ok(()));
        assert_eq!(
            found_strings,
            [
                found("resources/string@name", Some("name"), "backend_secret"),
                found("resources/string", Some("backend_secret"), KEY),
            ]
        );
    }

    #[test]
    fn blanked_attribute_names_are_recovered_from_the_resource_map() {
        let mut document = build(&manifest());
        // Blank the pool strings "name" and "value": the resource map still says which they are.
        for word in ["name", "value"] {
            let units: Vec<u8> = word.encode_utf16().flat_map(u16::to_le_bytes).collect();
            let at = document.windows(units.len()).position(|w| w == units).unwrap();
            document[at..at + units.len()].copy_from_slice(&b"x\0".repeat(word.len()));
        }
        assert_eq!(run(&document), (expected(), Ok(())));
    }

    #[test]
    fn truncation_at_every_length_never_panics() {
        let document = build(&manifest());
        for len in 0..document.len() {
            let (found_strings, result) = run(&document[..len]);
            assert!(result.is_err(), "length {len}");
            assert!(found_strings.len() <= expected().len());
        }
    }

    #[test]
    fn deep_nesting_stops_at_256_levels() {
        let mut element = Element::new("leaf").attribute("secret", "innermost-secret-value");
        for _ in 0..300 {
            element = Element::new("e").attribute("v", "some-value").child(element);
        }
        let (found_strings, result) = run(&build(&element));
        assert_eq!(found_strings.len(), MAX_DEPTH);
        assert!(result.unwrap_err().message.contains("deeper than 256"));
    }

    #[test]
    fn huge_declared_attribute_count_stops_at_the_chunk_end() {
        let mut document = build(&Element::new("a").attribute("k", "value-value"));
        let at = find_chunk(&document, RES_XML_START_ELEMENT_TYPE);
        document[at + 16 + 12..at + 16 + 14].copy_from_slice(&u16::MAX.to_le_bytes());
        let (found_strings, result) = run(&document);
        assert!(found_strings.is_empty());
        assert!(result.unwrap_err().message.contains("past the chunk"));
    }

    #[test]
    fn string_index_outside_the_pool_is_an_error() {
        let mut document = build(&Element::new("a").attribute("k", "value-value"));
        let at = find_chunk(&document, RES_XML_START_ELEMENT_TYPE);
        // The element's name index.
        document[at + 16 + 4..at + 16 + 8].copy_from_slice(&0x00ff_ffffu32.to_le_bytes());
        assert!(run(&document).1.unwrap_err().message.contains("outside the pool"));
    }

    #[test]
    fn huge_declared_string_count_allocates_nothing() {
        let mut document = build(&manifest());
        document[8 + 8..8 + 12].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(run(&document).1.unwrap_err().message, "string count larger than the pool");
    }

    #[test]
    fn not_binary_xml_is_rejected() {
        assert!(run(b"<manifest/>").1.is_err());
        assert!(run(&[2, 0, 8, 0, 8, 0, 0, 0]).1.is_err());
    }

    /// Where the first chunk of `kind` starts (after the document header and pools).
    fn find_chunk(document: &[u8], kind: u16) -> usize {
        let mut at = 8;
        loop {
            let size = u32::from_le_bytes(document[at + 4..at + 8].try_into().unwrap()) as usize;
            if u16::from_le_bytes([document[at], document[at + 1]]) == kind {
                return at;
            }
            at += size;
        }
    }

    #[test]
    fn text_nodes_sharing_one_long_blank_string_are_charged() {
        // 2000 text nodes all referencing one 64 KiB run of spaces: nothing is emitted, so only
        // charging each string read keeps the work linear in the file size.
        let blank = " ".repeat(1 << 16);
        let mut root = Element::new("resources");
        for _ in 0..2000 {
            root = root.child(Element::text(&blank));
        }
        let (found_strings, result) = run_within(&build_with(&root, false), 1 << 20);
        assert!(found_strings.is_empty());
        assert!(result.unwrap_err().message.contains("budget"));
    }

    #[test]
    fn long_names_are_read_only_up_to_the_name_limit() {
        let long = "n".repeat(100_000);
        let (found_strings, result) = run(&build(&Element::new(&long).attribute(&long, "value-value")));
        assert_eq!(result, Ok(()));
        let expected_name = "n".repeat(MAX_NAME_CHARS);
        assert_eq!(
            found_strings,
            [found(&format!("{expected_name}@{expected_name}"), Some(&expected_name), "value-value")]
        );
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..1024)) {
            let _ = run(&bytes);
        }

        #[test]
        fn mutated_documents_never_panic(
            utf8 in any::<bool>(),
            flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
        ) {
            let mut document = build_with(&manifest(), utf8);
            for (index, byte) in flips {
                let at = index.index(document.len());
                document[at] = byte;
            }
            let _ = run(&document);
        }
    }
}
