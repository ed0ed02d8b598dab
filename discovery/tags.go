package discovery

// TagsMetaKey is the key in a tool's _meta under which it lists its tags, a
// JSON array of strings: {"_meta": {"io.mcpmesh/tags": ["github"]}}. A
// node's card carries them, so that a tool is found by tag.
const TagsMetaKey = "io.mcpmesh/tags"
