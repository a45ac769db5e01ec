#include "perf/cluster/PlanetLabTrace.hpp"

#include <algorithm>
#include <charconv>
#include <fstream>

namespace mm::cluster {

VmTrace read_planetlab_file(const std::filesystem::path& file) {
  std::ifstream in(file);
  if (!in) throw std::runtime_error("cannot open trace " + file.string());
  VmTrace trace;
  trace.name = file.filename().string();
  trace.percent.reserve(kSamplesPerDay + 1);
  std::string line;
  int line_no = 0;
  while (std::getline(in, line)) {
    ++line_no;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    // A trailing empty line at the end of the file is tolerated, nothing else.
    if (line.empty()) {
      if (in.peek() == std::char_traits<char>::eof()) break;
      throw TraceFormatError(file.string() + ":" + std::to_string(line_no) + ": empty line");
    }
    int value = -1;
    const char* first = line.data();
    const char* last = line.data() + line.size();
    auto [ptr, ec] = std::from_chars(first, last, value);
    if (ec != std::errc() || ptr != last)
      throw TraceFormatError(file.string() + ":" + std::to_string(line_no) + ": '" + line +
                             "' is not an integer percentage");
    if (value < 0 || value > 100)
      throw TraceFormatError(file.string() + ":" + std::to_string(line_no) + ": " +
                             std::to_string(value) + " outside 0-100");
    if (line_no > kSamplesPerDay)
      throw TraceFormatError(file.string() + ": more than " + std::to_string(kSamplesPerDay) +
                             " samples");
    trace.percent.push_back(static_cast<uint8_t>(value));
  }
  if (trace.percent.size() != static_cast<size_t>(kSamplesPerDay))
    throw TraceFormatError(file.string() + ": " + std::to_string(trace.percent.size()) +
                           " samples, expected " + std::to_string(kSamplesPerDay));
  trace.percent.push_back(trace.percent.back());
  return trace;
}

std::vector<VmTrace> read_planetlab_day(const std::filesystem::path& folder, FileOrder order) {
  if (!std::filesystem::is_directory(folder))
    throw std::runtime_error("trace folder " + folder.string() + " is not a directory");
  std::vector<std::filesystem::path> files;
  for (const auto& entry : std::filesystem::directory_iterator(folder))
    if (entry.is_regular_file() && entry.path().filename().string()[0] != '.' &&
        entry.path().filename() != "README.md")
      files.push_back(entry.path());
  if (order == FileOrder::by_name) std::sort(files.begin(), files.end());
  if (files.empty()) throw std::runtime_error("trace folder " + folder.string() + " is empty");
  std::vector<VmTrace> traces;
  traces.reserve(files.size());
  for (const auto& f : files) traces.push_back(read_planetlab_file(f));
  return traces;
}

}  // namespace mm::cluster
