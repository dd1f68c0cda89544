package object

// Limits on what one object may hold. Each is what real repositories need,
// with room to spare, and no more: every one of them is a size or count a
// pushing client controls, and the daemon's memory and time per object
// follow from them.
const (
	// MaxMetadataSize bounds commit and dirtree objects: libostree's own
	// OSTREE_MAX_METADATA_SIZE (10 MiB up to libostree 2022.7 at least),
	// above which its clients refuse to load or pull them. A Flatpak
	// runtime commit with ostree.sizes for 200,000 files is about 9 MB.
	MaxMetadataSize = 10 << 20
	// MaxDirMetaSize bounds dirmeta objects: ownership, mode and extended
	// attributes of a directory, like the header of a file.
	MaxDirMetaSize = MaxFileHeaderSize
	// MaxFileHeaderSize bounds the GVariant header of a .filez (ownership,
	// mode, symlink target and extended attributes).
	MaxFileHeaderSize = 1 << 20
	// MaxCommitMetaSize bounds detached metadata: signatures only, a few
	// KiB in practice.
	MaxCommitMetaSize = 1 << 20
	// MaxDirTreeEntries bounds the entries (files and subdirectories) of
	// one dirtree. The largest directories of real OS and Flatpak trees hold
	// thousands to tens of thousands of entries.
	MaxDirTreeEntries = 1 << 18
	// MaxTreeDepth bounds how deeply directories nest in a commit:
	// libostree's OSTREE_MAX_RECURSION. libostree's own tools (fsck, prune,
	// checkout) crash or fail on deeper trees.
	MaxTreeDepth = 256
	// MaxSignaturesPerKey bounds the entries of each signature list of
	// detached metadata (ostree.gpgsigs, ostree.sign.ed25519) after a merge.
	MaxSignaturesPerKey = 64
	// MaxGPGSignatureSize bounds one entry of ostree.gpgsigs.
	MaxGPGSignatureSize = 64 << 10
	// maxCommitMetaEntries bounds the keys of detached metadata.
	maxCommitMetaEntries = 256
)

// MaxSize is the largest stored size of an object of type t; 0 for file
// objects, whose limit is the daemon's max_object_size.
func MaxSize(t Type) int64 {
	switch t {
	case Commit, DirTree:
		return MaxMetadataSize
	case DirMeta:
		return MaxDirMetaSize
	case CommitMeta:
		return MaxCommitMetaSize
	}
	return 0
}
