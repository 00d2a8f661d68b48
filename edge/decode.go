package edge

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"

	"tally/ledger"
)

// Read reads a whole request body, at most MaxBody bytes, so that a body
// over the limit is a 413 wherever the excess is.
func Read(r *http.Request) ([]byte, *Error) {
	b, err := io.ReadAll(io.LimitReader(r.Body, MaxBody+1))
	if err != nil {
		return nil, decodeError(err)
	}
	if len(b) > MaxBody {
		return nil, tooLarge()
	}
	return b, nil
}

// Decode reads r's JSON body into v strictly: unknown fields, trailing
// data and a body over the limit are errors.
func Decode(r *http.Request, v any) *Error {
	b, e := Read(r)
	if e != nil {
		return e
	}
	return DecodeBytes(b, v)
}

// DecodeBytes decodes b into v strictly.
func DecodeBytes(b []byte, v any) *Error {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return decodeError(err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return Invalid("body has data after the JSON value")
	}
	return nil
}

// DecodeBatch decodes a batch body, {"<list>": [item, ...]}, like
// DecodeBytes. When the fault is in an item, the error names the item's
// index and result code as docs/api.md promises. The items are decoded
// one by one to find it only after the whole body failed, so a good body
// is decoded once.
func DecodeBatch(b []byte, v any, list string, item func() any) *Error {
	e := DecodeBytes(b, v)
	if e == nil || e.Status != http.StatusBadRequest {
		return e
	}
	if i, ok := badItem(b, list, item); ok {
		e.Index = &i
		e.Message = fmt.Sprintf("%s[%d]: %s", list, i, e.Message)
		if e.Result == "" {
			e.Result = string(ledger.InvalidRequest)
		}
	}
	return e
}

// badItem returns the index of the first item of b's list that does not
// decode strictly on its own; false when the envelope itself is at fault.
func badItem(b []byte, list string, item func() any) (int, bool) {
	var env map[string]json.RawMessage
	var items []json.RawMessage
	if json.Unmarshal(b, &env) != nil || json.Unmarshal(env[list], &items) != nil {
		return 0, false
	}
	for i, raw := range items {
		dec := json.NewDecoder(bytes.NewReader(raw))
		dec.DisallowUnknownFields()
		if dec.Decode(item()) != nil {
			return i, true
		}
	}
	return 0, false
}

// CheckBatch refuses a batch of n items outside 1..ledger.MaxBatch.
func CheckBatch(list string, n int) *Error {
	if n == 0 || n > ledger.MaxBatch {
		return Invalid("%s must hold 1 to %d items, got %d", list, ledger.MaxBatch, n)
	}
	return nil
}

func tooLarge() *Error {
	return Errorf(http.StatusRequestEntityTooLarge, CodeTooLarge, "body is larger than %d bytes", MaxBody)
}

func decodeError(err error) *Error {
	var mbe *http.MaxBytesError
	var ute *json.UnmarshalTypeError
	var se *json.SyntaxError
	switch {
	case errors.As(err, &mbe):
		return tooLarge()
	case errors.As(err, &ute):
		e := Invalid("field %s: %.40s does not fit %s", ute.Field, ute.Value, ute.Type)
		if strings.HasSuffix(ute.Field, "amount") {
			e.Result = string(ledger.AmountInvalid)
		}
		return e
	case errors.As(err, &se):
		return Invalid("malformed JSON at byte %d: %v", se.Offset, err)
	case errors.Is(err, io.EOF):
		return Invalid("empty body")
	}
	return Invalid("malformed JSON: %v", err)
}
