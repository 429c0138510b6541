// Exact copies of arrays kept for long: an array grown by appends or inserts keeps the room it doubled into.

extension Array {
    /// A copy in a buffer of exactly `count` elements, or `self` if it has no spare room. (`Array(self[...])`
    /// would share this buffer, spare room and all.)
    public func withoutSpareRoom() -> [Element] {
        guard capacity > count else { return self }
        return [Element](unsafeUninitializedCapacity: count) { buffer, n in n = buffer.initialize(fromContentsOf: self) }
    }
}

extension ContiguousArray {
    /// A copy in a buffer of exactly `count` elements, or `self` if it has no spare room.
    public func withoutSpareRoom() -> ContiguousArray<Element> {
        guard capacity > count else { return self }
        return ContiguousArray(unsafeUninitializedCapacity: count) { buffer, n in n = buffer.initialize(fromContentsOf: self) }
    }
}
