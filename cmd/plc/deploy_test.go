package main

import (
	"os"
	"slices"
	"strings"
	"testing"

	"go.yaml.in/yaml/v4"
)

// TestComposeFileParses checks deploy/compose.yaml (README "Running at
// scale"): it parses, has the topology's services, and both plc
// processes write to the primary and read from the replica.
func TestComposeFileParses(t *testing.T) {
	b, err := os.ReadFile("../../deploy/compose.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var f struct {
		Services map[string]struct {
			Image       string            `yaml:"image"`
			Command     []string          `yaml:"command"`
			Environment map[string]string `yaml:"environment"`
		} `yaml:"services"`
		Configs map[string]struct {
			Content string `yaml:"content"`
		} `yaml:"configs"`
	}
	if err := yaml.Unmarshal(b, &f); err != nil {
		t.Fatalf("deploy/compose.yaml: %v", err)
	}
	var names []string
	for n := range f.Services {
		names = append(names, n)
	}
	slices.Sort(names)
	if want := []string{"keygen", "plc1", "plc2", "primary", "proxy", "replica"}; !slices.Equal(names, want) {
		t.Fatalf("services %v, want %v", names, want)
	}
	for _, n := range []string{"plc1", "plc2"} {
		s := f.Services[n]
		if !slices.Equal(s.Command, []string{"serve"}) {
			t.Errorf("%s runs %v, want serve", n, s.Command)
		}
		if !strings.Contains(s.Environment["PLC_DB"], "@primary:") || !strings.Contains(s.Environment["PLC_READ_DB"], "@replica:") {
			t.Errorf("%s: PLC_DB %q, PLC_READ_DB %q: want the primary and the replica", n, s.Environment["PLC_DB"], s.Environment["PLC_READ_DB"])
		}
	}
	if c := f.Configs["caddyfile"].Content; !strings.Contains(c, "plc1:2582") || !strings.Contains(c, "plc2:2582") {
		t.Errorf("the proxy does not send to both plc processes:\n%s", c)
	}
}
