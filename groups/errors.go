package groups

import "errors"

// Sentinel errors. Every error returned by this package wraps one of them.
var (
	// ErrInvalidSpec: a model spec (ours, a preset, or imported) is inconsistent.
	ErrInvalidSpec = errors.New("groups: invalid model spec")
	// ErrUnsupported: the input names something this package does not model
	// (an unknown Hugging Face model_type, for instance).
	ErrUnsupported = errors.New("groups: unsupported")
	// ErrUnknownPreset: no preset has the given name.
	ErrUnknownPreset = errors.New("groups: unknown preset")
	// ErrImpossibleTP: the tensor-parallel size cannot shard this model.
	ErrImpossibleTP = errors.New("groups: impossible tensor-parallel size")
	// ErrBadGeometry: a block size, layout or kernel block size is unusable.
	ErrBadGeometry = errors.New("groups: bad geometry")
)

// FieldError names the field of a spec or config that is wrong, and wraps
// ErrInvalidSpec, ErrUnsupported or another sentinel.
type FieldError struct {
	Field string // dotted path, e.g. "layers[3].attention.kv_heads"
	Msg   string
	Err   error
}

func (e *FieldError) Error() string {
	if e.Msg == "" {
		return e.Err.Error() + ": field " + e.Field
	}
	return e.Err.Error() + ": field " + e.Field + ": " + e.Msg
}

func (e *FieldError) Unwrap() error { return e.Err }

func fieldErr(field, msg string) error {
	return &FieldError{Field: field, Msg: msg, Err: ErrInvalidSpec}
}
