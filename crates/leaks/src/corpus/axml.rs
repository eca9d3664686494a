//! Writes Android binary XML documents (the form of `AndroidManifest.xml` in an APK) in the
//! `RES_XML_TYPE` chunk layout of AOSP's `ResourceTypes.h`: a string pool, a resource map for
//! the framework attributes used, the `android` namespace, and start, end and CDATA chunks.
//! Attribute values are written as strings (raw value and a `TYPE_STRING` typed value).

use super::arsc::{Interner, put_header, string_pool};
use crate::decode::axml::ANDROID_ATTRIBUTES;

/// The namespace of `android:` attributes.
pub const ANDROID_NAMESPACE: &str = "http://schemas.android.com/apk/res/android";
/// The element name that marks a text node (see [`Element::text`]).
pub const TEXT: &str = "#text";

const RES_XML_TYPE: u16 = 0x0003;
const RES_XML_START_NAMESPACE_TYPE: u16 = 0x0100;
const RES_XML_END_NAMESPACE_TYPE: u16 = 0x0101;
const RES_XML_START_ELEMENT_TYPE: u16 = 0x0102;
const RES_XML_END_ELEMENT_TYPE: u16 = 0x0103;
const RES_XML_CDATA_TYPE: u16 = 0x0104;
const RES_XML_RESOURCE_MAP_TYPE: u16 = 0x0180;
const NODE_HEADER_SIZE: usize = 16;
const TYPE_STRING: u8 = 0x03;
const NO_STRING: u32 = 0xffff_ffff;

/// An XML element. Attribute names may carry the `android:` prefix; a child made by
/// [`Element::text`] is written as a text node.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Element {
    pub name: String,
    pub attributes: Vec<(String, String)>,
    pub children: Vec<Element>,
}

impl Element {
    pub fn new(name: &str) -> Element {
        Element { name: name.to_owned(), ..Element::default() }
    }

    /// A text node: an element named [`TEXT`] whose one attribute holds the text.
    pub fn text(content: &str) -> Element {
        Element { name: TEXT.to_owned(), attributes: vec![(TEXT.to_owned(), content.to_owned())], children: Vec::new() }
    }

    pub fn attribute(mut self, name: &str, value: &str) -> Element {
        self.attributes.push((name.to_owned(), value.to_owned()));
        self
    }

    pub fn child(mut self, child: Element) -> Element {
        self.children.push(child);
        self
    }

    /// The text of a node made by [`Element::text`].
    pub fn as_text(&self) -> Option<&str> {
        match (self.name.as_str(), self.attributes.as_slice()) {
            (TEXT, [(_, content)]) => Some(content),
            _ => None,
        }
    }
}

/// A binary XML document with a UTF-16 string pool, as aapt writes manifests.
pub fn build(root: &Element) -> Vec<u8> {
    build_with(root, false)
}

/// A binary XML document with a UTF-8 or UTF-16 string pool.
pub fn build_with(root: &Element, utf8: bool) -> Vec<u8> {
    // Framework attribute names come first in the pool, since the resource map covers a prefix.
    let mut strings: Vec<String> = Vec::new();
    let mut ids = Vec::new();
    let mut uses_android = false;
    walk(root, &mut |element| {
        for (name, _) in &element.attributes {
            if let Some(local) = name.strip_prefix("android:") {
                uses_android = true;
                if let Some(&(id, _)) = ANDROID_ATTRIBUTES.iter().find(|(_, known)| *known == local)
                    && !strings.iter().any(|known| known == local)
                {
                    strings.push(local.to_owned());
                    ids.push(id);
                }
            }
        }
    });
    let mut pool = Interner { strings };

    let mut body = Vec::new();
    if !ids.is_empty() {
        put_header(&mut body, RES_XML_RESOURCE_MAP_TYPE, 8, 8 + 4 * ids.len());
        for id in &ids {
            body.extend_from_slice(&id.to_le_bytes());
        }
    }
    let namespace = uses_android.then(|| (pool.index("android"), pool.index(ANDROID_NAMESPACE)));
    if let Some((prefix, uri)) = namespace {
        node(&mut body, RES_XML_START_NAMESPACE_TYPE, &[prefix, uri]);
    }
    element(&mut body, root, &mut pool, namespace.map(|(_, uri)| uri));
    if let Some((prefix, uri)) = namespace {
        node(&mut body, RES_XML_END_NAMESPACE_TYPE, &[prefix, uri]);
    }

    let pool_chunk = string_pool(&pool.strings, utf8);
    let mut out = Vec::new();
    put_header(&mut out, RES_XML_TYPE, 8, 8 + pool_chunk.len() + body.len());
    out.extend_from_slice(&pool_chunk);
    out.extend_from_slice(&body);
    out
}

fn walk(element: &Element, visit: &mut impl FnMut(&Element)) {
    visit(element);
    for child in &element.children {
        walk(child, visit);
    }
}

fn element(out: &mut Vec<u8>, element: &Element, pool: &mut Interner, android: Option<u32>) {
    if let Some(text) = element.as_text() {
        let data = pool.index(text);
        // The text reference, then an untyped `Res_value`.
        node(out, RES_XML_CDATA_TYPE, &[data, 0x0000_0008, 0]);
        return;
    }
    let name = pool.index(&element.name);
    let mut words = vec![NO_STRING, name];
    let mut attributes = Vec::new();
    for (attribute, value) in &element.attributes {
        let (namespace, local) = match (attribute.strip_prefix("android:"), android) {
            (Some(local), Some(uri)) => (uri, local),
            _ => (NO_STRING, attribute.as_str()),
        };
        let value = pool.index(value);
        attributes.extend_from_slice(&[
            namespace,
            pool.index(local),
            value,
            u32::from(TYPE_STRING) << 24 | 0x0008,
            value,
        ]);
    }
    // attributeStart and attributeSize, attributeCount and idIndex, classIndex and styleIndex.
    words.push(20 | 20 << 16);
    words.push(element.attributes.len() as u32);
    words.push(0);
    words.extend_from_slice(&attributes);
    node(out, RES_XML_START_ELEMENT_TYPE, &words);
    for child in &element.children {
        self::element(out, child, pool, android);
    }
    node(out, RES_XML_END_ELEMENT_TYPE, &[NO_STRING, name]);
}

/// A `ResXMLTree_node` (line 1, no comment) followed by `extension`.
fn node(out: &mut Vec<u8>, kind: u16, extension: &[u32]) {
    put_header(out, kind, NODE_HEADER_SIZE, NODE_HEADER_SIZE + 4 * extension.len());
    out.extend_from_slice(&1u32.to_le_bytes());
    out.extend_from_slice(&NO_STRING.to_le_bytes());
    for word in extension {
        out.extend_from_slice(&word.to_le_bytes());
    }
}
