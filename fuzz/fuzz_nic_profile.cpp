// NIC-profile TOML (nic-profiles/README.md) through parse_profile(), the
// strict loader memmotiond uses, with a value for the usual variables.
// Seeds are the shipped profiles. Properties: every refusal is a
// ProfileError naming the file; a profile that loads gives EAL arguments
// that carry --no-pci.
#include <algorithm>
#include <string>

#include "dataplane/port/NicProfile.hpp"
#include "fuzz/FuzzCheck.hpp"

using namespace mm::port;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  try {
    const NicProfile p =
        parse_profile(text, "fuzz.toml", {{"iface", "veth0"}}, {{"ebpf_dir", "/e"}});
    const auto args = eal_arguments(p, "mm-fuzz");
    MM_FUZZ_CHECK(std::find(args.begin(), args.end(), "--no-pci") != args.end());
    vdev_name(p);
  } catch (const ProfileError& e) {
    MM_FUZZ_CHECK(std::string_view(e.what()).starts_with("fuzz.toml: "));
  }
  return 0;
}
