package validate

import (
	"reflect"
	"testing"
)

// TestSameOperationReadsEveryField: AppendCompact's check compares
// contents with sameOperation, so it must see a change in any field of
// Operation (a field added later and not compared fails here).
func TestSameOperationReadsEveryField(t *testing.T) {
	base := Operation{
		Type: TypeOperation, RotationKeys: []string{"a"}, VerificationMethods: []VerificationMethod{{ID: "atproto", Key: "k"}},
		AlsoKnownAs: []string{"at://x"}, Services: []Service{{ID: "atproto_pds", Type: "t", Endpoint: "https://e"}},
		Prev: "p", SigningKey: "s", RecoveryKey: "r", Handle: "h", Service: "v", Sig: "g",
	}
	if !sameOperation(&base, &base) {
		t.Fatal("an operation differs from itself")
	}
	typ := reflect.TypeOf(base)
	for i := range typ.NumField() {
		changed := base
		f := reflect.ValueOf(&changed).Elem().Field(i)
		switch f.Kind() {
		case reflect.String:
			f.SetString(f.String() + "x")
		case reflect.Slice:
			s := reflect.MakeSlice(f.Type(), f.Len(), f.Len())
			reflect.Copy(s, f)
			e := s.Index(0)
			if e.Kind() == reflect.String {
				e.SetString(e.String() + "x")
			} else {
				e.Field(0).SetString(e.Field(0).String() + "x")
			}
			f.Set(s)
		case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
			f.SetInt(f.Int() + 1)
		case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
			f.SetUint(f.Uint() + 1)
		default:
			t.Fatalf("field %s of kind %s: teach this test to change it", typ.Field(i).Name, f.Kind())
		}
		if sameOperation(&base, &changed) {
			t.Errorf("a change of %s is not seen", typ.Field(i).Name)
		}
	}
}
