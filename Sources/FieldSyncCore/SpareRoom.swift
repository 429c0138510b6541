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

// Arrays that grow an element at a time for a whole run and are kept (a simulator's per-change and per-contact
// tables): appending doubles the buffer when it is full, so such an array holds on average about 40 % more room
// than it uses, and up to twice. These grow it by an eighth instead: about 6 % on average, at the cost of a copy
// every `count / 8` appends (each element copied about 8 times over the run: amortized O(1) still).

extension Array {
    /// Appends `element`, growing a full buffer by an eighth (at least 16 elements) instead of doubling it.
    public mutating func appendGrowingByAnEighth(_ element: Element) {
        if count == capacity { reserveCapacity(count + Swift.max(count / 8, 16)) }
        append(element)
    }

    /// Appends `elements`, growing a buffer too small for them to the size needed and an eighth more.
    public mutating func appendGrowingByAnEighth<S: Collection>(contentsOf elements: S) where S.Element == Element {
        let needed = count + elements.count
        if needed > capacity { reserveCapacity(needed + Swift.max(needed / 8, 16)) }
        append(contentsOf: elements)
    }
}
