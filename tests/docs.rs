//! docs/LIFECYCLE.md points at code by `file:line`; this keeps every anchor
//! honest: the file exists, and the anchored line names the item the text
//! names just before it.

#[test]
fn lifecycle_anchors_point_at_what_they_name() {
    let doc = std::fs::read_to_string("docs/LIFECYCLE.md").unwrap();
    let mut checked = 0;
    let mut pos = 0;
    while let Some(i) =
        doc[pos..].find("(src/").map(|i| pos + i + 1).or_else(|| doc[pos..].find(" src/").map(|i| pos + i + 1))
    {
        let end =
            doc[i..].find(|c: char| !(c.is_ascii_alphanumeric() || "/_.:".contains(c))).map_or(doc.len(), |e| i + e);
        pos = end;
        let anchor = doc[i..end].trim_end_matches(['.', ':']);
        let Some((file, line)) = anchor.rsplit_once(':') else { continue };
        let Ok(line) = line.parse::<usize>() else { continue };
        let text = std::fs::read_to_string(file).unwrap_or_else(|e| panic!("{anchor}: {e}"));
        let at = text.lines().nth(line - 1).unwrap_or_else(|| panic!("{anchor}: past the end of {file}"));
        // The last `name` before the anchor, within the same sentence.
        let before = &doc[i.saturating_sub(160)..i];
        if let Some(name) = before.rsplit('`').nth(1).filter(|n| !n.contains(' ')) {
            let last = name.rsplit("::").next().unwrap_or(name);
            assert!(
                at.contains(last),
                "{anchor} should show `{name}`, but line {line} is: {at} (run python3 docs/refresh_anchors.py)"
            );
        }
        checked += 1;
    }
    assert!(checked >= 30, "only {checked} anchors found");
}
