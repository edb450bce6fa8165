package manifests

import (
	"reflect"

	"github.com/volboot/volboot/bootstrap/tomlpos"
)

// durationText is a duration as a manifest writes it ("25s"). It has its
// own type so that a value of the wrong type can be told what to be.
type durationText string

// checkTypes reports every value of the wrong type in a manifest, in words
// (tomlpos.Index.CheckTypes).
func checkTypes(pos *tomlpos.Index, doc map[string]any) error {
	return pos.CheckTypes(doc, reflect.TypeFor[rawManifest](), map[reflect.Type]string{
		reflect.TypeFor[durationText](): `a duration in quotes, such as "25s" or "7m"`,
	})
}
