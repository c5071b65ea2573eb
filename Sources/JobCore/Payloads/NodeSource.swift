/// Where a custom node comes from and how it installs: the fields a manifest's node, a lockfile's
/// node and a `node` job share. Each of them keeps these fields flat in its own JSON object (it
/// encodes its source into its own object), beside its own `commit` (required in a lockfile,
/// optional elsewhere) and its own extra fields.
package struct NodeSource: Sendable, Equatable, Encodable {
    package var name: String
    package var url: String
    package var tag: String?
    package var branch: String?
    package var recursive: Bool?
    package var requirements: Bool?
    package var env: [String: String]?
    package var installOrder: Int?

    package init(
        name: String, url: String, tag: String? = nil, branch: String? = nil, recursive: Bool? = nil, requirements: Bool? = nil,
        env: [String: String]? = nil, installOrder: Int? = nil
    ) {
        self.name = name
        self.url = url
        self.tag = tag
        self.branch = branch
        self.recursive = recursive
        self.requirements = requirements
        self.env = env
        self.installOrder = installOrder
    }

    enum CodingKeys: String, CodingKey {
        case name, url, tag, branch, recursive, requirements, env, installOrder = "install_order"
    }

    /// Reads the shared fields, and the document's `commit` with `commit`, in the order the documents
    /// always read them (name, url, commit, tag, …), so a document with several bad fields still
    /// names the same one first. With `nameFromURL` (a manifest) `url` is read first and `name` may
    /// be left out.
    package static func decode<Commit>(
        from decoder: any Decoder, nameFromURL: ((String) -> String)? = nil, commit: () throws -> Commit
    ) throws -> (source: NodeSource, commit: Commit) {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        let name: String
        let url: String
        if let nameFromURL {
            url = try container.decode(String.self, forKey: .url)
            name = try container.decodeIfPresent(String.self, forKey: .name) ?? nameFromURL(url)
        } else {
            name = try container.decode(String.self, forKey: .name)
            url = try container.decode(String.self, forKey: .url)
        }
        let pin = try commit()
        let source = NodeSource(
            name: name, url: url,
            tag: try container.decodeIfPresent(String.self, forKey: .tag),
            branch: try container.decodeIfPresent(String.self, forKey: .branch),
            recursive: try container.decodeIfPresent(Bool.self, forKey: .recursive),
            requirements: try container.decodeIfPresent(Bool.self, forKey: .requirements),
            env: try container.decodeIfPresent([String: String].self, forKey: .env),
            installOrder: try container.decodeIfPresent(Int.self, forKey: .installOrder))
        return (source, pin)
    }

    /// Writes the source's fields, then `fields` (the document's own: its `commit`, its extras), into
    /// one flat object; absent ones are left out.
    package func encode<Key: CodingKey>(to encoder: any Encoder, with fields: KeyValuePairs<Key, (any Encodable)?>) throws {
        try encode(to: encoder)
        var container = encoder.container(keyedBy: Key.self)
        for case let (key, value?) in fields {
            try container.encode(value, forKey: key)
        }
    }

    /// Install order: nodes with an `install_order` ascending, then the others, each by name (seed 002).
    package static func installsBefore(_ first: NodeSource, _ second: NodeSource) -> Bool {
        (first.installOrder ?? Int.max, first.name.lowercased()) < (second.installOrder ?? Int.max, second.name.lowercased())
    }
}

/// A document's node built on a `NodeSource`: the source's fields read and write as the node's own
/// (`node.name`, `node.installOrder = 2`).
@dynamicMemberLookup
package protocol NodeSourced {
    var source: NodeSource { get set }
}

extension NodeSourced {
    package subscript<Value>(dynamicMember field: WritableKeyPath<NodeSource, Value>) -> Value {
        get { source[keyPath: field] }
        set { source[keyPath: field] = newValue }
    }
}
