//! Writes the protobuf files of an Android App Bundle: an aapt2 `ResourceTable`
//! (`base/resources.pb`) and an aapt2 `XmlNode` (`base/manifest/AndroidManifest.xml`), with the
//! field numbers of AOSP's `frameworks/base/tools/aapt2/Resources.proto`.

use super::arsc::string_pool;
use super::axml::{ANDROID_NAMESPACE, Element};
use crate::decode::axml::ANDROID_ATTRIBUTES;

/// A `ResourceTable` with one package (id `0x7f`) holding `(type name, entry name, string
/// value)` entries, each with one default-configuration value.
pub fn resource_table(package: &str, entries: &[(&str, &str, &str)]) -> Vec<u8> {
    let mut types: Vec<&str> = Vec::new();
    for (kind, _, _) in entries {
        if !types.contains(kind) {
            types.push(kind);
        }
    }
    let mut package_message = Vec::new();
    message(&mut package_message, 1, &varint_field(1, 0x7f)); // package_id
    bytes(&mut package_message, 2, package.as_bytes()); // package_name
    for (type_index, kind) in types.iter().enumerate() {
        let mut type_message = Vec::new();
        message(&mut type_message, 1, &varint_field(1, type_index as u64 + 1)); // type_id
        bytes(&mut type_message, 2, kind.as_bytes()); // name
        for (entry_index, (_, name, value)) in entries.iter().filter(|(k, _, _)| k == kind).enumerate() {
            // Item.str (2) → String.value (1), inside Value.item (4), inside ConfigValue.value (2).
            let mut string = Vec::new();
            bytes(&mut string, 1, value.as_bytes());
            let mut item = Vec::new();
            message(&mut item, 2, &string);
            let mut value_message = Vec::new();
            message(&mut value_message, 4, &item);
            let mut config_value = Vec::new();
            message(&mut config_value, 1, &[]); // config: the default configuration
            message(&mut config_value, 2, &value_message);

            let mut entry = Vec::new();
            message(&mut entry, 1, &varint_field(1, entry_index as u64)); // entry_id
            bytes(&mut entry, 2, name.as_bytes()); // name
            message(&mut entry, 6, &config_value); // config_value
            message(&mut type_message, 3, &entry);
        }
        message(&mut package_message, 3, &type_message);
    }

    let mut table = Vec::new();
    // source_pool: a binary string pool of source paths, as aapt2 writes it.
    let mut source_pool = Vec::new();
    bytes(&mut source_pool, 1, &string_pool(&["res/values/strings.xml"], true));
    message(&mut table, 1, &source_pool);
    message(&mut table, 2, &package_message);
    let mut tool = Vec::new();
    bytes(&mut tool, 1, b"Android Asset Packaging Tool (aapt)");
    bytes(&mut tool, 2, b"2.19-SOONG BUILD NUMBER PLACEHOLDER");
    message(&mut table, 4, &tool); // tool_fingerprint
    table
}

/// An `XmlNode` for `root`: attribute names with the `android:` prefix are put in the android
/// namespace with their framework resource id; [`Element::text`] children become text nodes.
pub fn xml(root: &Element) -> Vec<u8> {
    xml_node(root, true)
}

fn xml_node(element: &Element, root: bool) -> Vec<u8> {
    let mut node = Vec::new();
    if let Some(text) = element.as_text() {
        bytes(&mut node, 2, text.as_bytes());
        return node;
    }
    let mut xml_element = Vec::new();
    if root {
        let mut namespace = Vec::new();
        bytes(&mut namespace, 1, b"android");
        bytes(&mut namespace, 2, ANDROID_NAMESPACE.as_bytes());
        message(&mut xml_element, 1, &namespace);
    }
    bytes(&mut xml_element, 3, element.name.as_bytes());
    for (name, value) in &element.attributes {
        let mut attribute = Vec::new();
        let local = match name.strip_prefix("android:") {
            Some(local) => {
                bytes(&mut attribute, 1, ANDROID_NAMESPACE.as_bytes());
                local
            }
            None => name.as_str(),
        };
        bytes(&mut attribute, 2, local.as_bytes());
        bytes(&mut attribute, 3, value.as_bytes());
        if let Some(&(id, _)) = ANDROID_ATTRIBUTES.iter().find(|(_, known)| *known == local) {
            attribute.extend_from_slice(&varint_field(5, u64::from(id)));
        }
        message(&mut xml_element, 4, &attribute);
    }
    for child in &element.children {
        message(&mut xml_element, 5, &xml_node(child, false));
    }
    message(&mut node, 1, &xml_element);
    node
}

/// A length-delimited field holding `payload`.
pub fn bytes(out: &mut Vec<u8>, number: u32, payload: &[u8]) {
    varint(out, u64::from(number) << 3 | 2);
    varint(out, payload.len() as u64);
    out.extend_from_slice(payload);
}

/// A nested message field (the same wire form as [`bytes`]).
pub fn message(out: &mut Vec<u8>, number: u32, payload: &[u8]) {
    bytes(out, number, payload);
}

/// A varint field.
pub fn varint_field(number: u32, value: u64) -> Vec<u8> {
    let mut out = Vec::new();
    varint(&mut out, u64::from(number) << 3);
    varint(&mut out, value);
    out
}

/// Appends `value` as a base-128 varint.
pub fn varint(out: &mut Vec<u8>, mut value: u64) {
    loop {
        let byte = (value & 0x7f) as u8;
        value >>= 7;
        if value == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}
