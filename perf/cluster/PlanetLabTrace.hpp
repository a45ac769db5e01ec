// Reader for the PlanetLab CPU traces CloudSim ships: one file per VM-day,
// 288 lines, each an integer CPU utilization in percent (0-100), one sample
// every 300 s. Files are read as they are; anything else is refused with the
// file name and line in the message.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

namespace mm::cluster {

inline constexpr int kSamplesPerDay = 288;
inline constexpr double kSampleSeconds = 300.0;

struct VmTrace {
  std::string name;
  // kSamplesPerDay + 1 values in percent; the last repeats sample 287, as
  // CloudSim's UtilizationModelPlanetLabInMemory does.
  std::vector<uint8_t> percent;
  double utilization(int sample) const { return percent[static_cast<size_t>(sample)] / 100.0; }
};

class TraceFormatError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// One file. Throws TraceFormatError (wrong line count, non-integer, out of
// range) or std::runtime_error (cannot open).
VmTrace read_planetlab_file(const std::filesystem::path& file);

// Every regular file of a day folder, sorted by file name, or in the order
// the file system lists them (what CloudSim's File.listFiles gives, which
// decides which trace gets which VM type; used to compare with CloudSim).
enum class FileOrder { by_name, listing };
std::vector<VmTrace> read_planetlab_day(const std::filesystem::path& folder,
                                        FileOrder order = FileOrder::by_name);

}  // namespace mm::cluster
