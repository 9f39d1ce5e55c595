package corpus

import (
	"math/rand/v2"
	"strconv"
	"time"
)

// Field values shaped like the real directory's: at:// handles under
// bsky.social or a custom domain, PDS endpoints on bsky.network's mushroom
// hosts (bsky.social itself before federation), a few self-hosted PDSes.

var words = [...]string{
	"amber", "arrow", "aspen", "atlas", "autumn", "basil", "birch", "blue", "bramble", "brook",
	"cedar", "cinder", "clover", "cobalt", "comet", "coral", "cosmo", "crane", "dawn", "delta",
	"dune", "echo", "ember", "fable", "fern", "finch", "fjord", "flint", "frost", "gale",
	"garnet", "ginger", "glade", "granite", "harbor", "hazel", "heron", "holly", "indigo", "iris",
	"ivory", "jade", "juniper", "kestrel", "lark", "laurel", "lilac", "linden", "lunar", "maple",
	"marble", "meadow", "merlin", "mint", "mist", "moss", "nova", "oak", "ocean", "olive",
	"onyx", "opal", "orbit", "otter", "pebble", "pine", "plume", "prairie", "quartz", "quill",
	"raven", "reed", "ridge", "river", "robin", "rowan", "sable", "saffron", "sage", "shadow",
	"sierra", "silver", "slate", "sparrow", "spruce", "star", "stone", "storm", "summit", "swift",
	"thistle", "thorn", "tide", "timber", "topaz", "tulip", "umber", "vale", "velvet", "willow",
	"wren", "zephyr",
}

// mushrooms are bsky.network PDS host names.
var mushrooms = [...]string{
	"agaric", "amanita", "blewit", "boletus", "chaga", "chanterelle", "conocybe", "cordyceps",
	"enoki", "fibercap", "ganoderma", "hedgehog", "hydnum", "inkcap", "lepista", "lionsmane",
	"maitake", "matsutake", "morel", "oyster", "panus", "porcini", "puffball", "russula",
	"shiitake", "shimeji", "stropharia", "truffle", "verpa", "woodear",
}

var tlds = [...]string{"com", "net", "org", "dev", "xyz", "io", "social", "me"}

// federationStart: before it, new accounts lived on https://bsky.social.
var federationStart = time.Date(2023, 11, 1, 0, 0, 0, 0, time.UTC).UnixMilli()

func word(rng *rand.Rand) string { return words[rng.IntN(len(words))] }

// handleName is the user part of a handle: "fern", "fern-otter", "fern42".
func handleName(rng *rand.Rand) string {
	switch u := rng.IntN(10); {
	case u < 4:
		return word(rng) + "-" + word(rng)
	case u < 7:
		return word(rng) + strconv.Itoa(rng.IntN(1000))
	default:
		return word(rng) + word(rng)
	}
}

// newHandle returns an alsoKnownAs entry: mostly at://name.bsky.social,
// sometimes a custom domain.
func newHandle(rng *rand.Rand) string {
	if rng.IntN(100) < 85 {
		return "at://" + handleName(rng) + ".bsky.social"
	}
	return "at://" + word(rng) + word(rng) + "." + tlds[rng.IntN(len(tlds))]
}

// legacyHandle is a handle as legacy create ops carry it: no at://.
func legacyHandle(rng *rand.Rand) string { return handleName(rng) + ".bsky.social" }

// newPDS returns a PDS endpoint for an account active at t (ms).
func newPDS(rng *rand.Rand, t int64) string {
	if t < federationStart {
		return "https://bsky.social"
	}
	if rng.IntN(100) < 5 {
		return "https://pds." + word(rng) + "." + tlds[rng.IntN(len(tlds))]
	}
	region := "us-east"
	if rng.IntN(3) == 0 {
		region = "us-west"
	}
	return "https://" + mushrooms[rng.IntN(len(mushrooms))] + "." + region + ".host.bsky.network"
}

// hostilePDS is where an attacker points a hijacked DID.
func hostilePDS(rng *rand.Rand) string {
	return "https://pds." + word(rng) + "-" + word(rng) + "." + tlds[rng.IntN(len(tlds))]
}
