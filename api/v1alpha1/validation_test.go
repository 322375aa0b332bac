package v1alpha1

import (
	"reflect"
	"strings"
	"testing"
)

func TestDefaultIsValidAndIdempotent(t *testing.T) {
	p := Default()
	if errs := Validate(p); len(errs) > 0 {
		t.Fatalf("the built-in policy is invalid: %v", errs)
	}
	again := Default()
	SetDefaults(again)
	if !reflect.DeepEqual(p, again) {
		t.Fatalf("SetDefaults is not idempotent:\n%+v\n%+v", p, again)
	}
	if *p.Profiles[DefaultProfileName].Options.Attempts != 3 || *p.Profiles[NodeLocalProfileName].Options.Attempts != 2 {
		t.Errorf("built-in profiles changed: %+v", p.Profiles)
	}
}

func TestValidateFieldPaths(t *testing.T) {
	p := Default()
	p.Profiles["Bad_Name"] = Profile{Options: Options{Ndots: ptr[int32](16)}}
	p.Rules = []Rule{{Profile: "gone"}}
	var got []string
	for _, e := range Validate(p) {
		got = append(got, e.Field)
	}
	want := "profiles.Bad_Name profiles.Bad_Name.options.ndots rules[0] rules[0].profile"
	if strings.Join(got, " ") != want {
		t.Errorf("fields = %v, want %s", got, want)
	}
}
