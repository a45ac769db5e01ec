#include "perf/cluster/PlanetLabTrace.hpp"

#include <gtest/gtest.h>

#include <fstream>

using namespace mm::cluster;

namespace {

std::filesystem::path write_temp(const std::string& name, const std::string& body) {
  const auto dir = std::filesystem::temp_directory_path() / "mm_cluster_trace_test";
  std::filesystem::create_directories(dir);
  const auto p = dir / name;
  std::ofstream(p) << body;
  return p;
}

std::string lines(int n, const std::string& value = "7") {
  std::string s;
  for (int i = 0; i < n; ++i) s += value + "\n";
  return s;
}

}  // namespace

TEST(PlanetLabTrace, ReadsTheVendoredDayAsCloudSimDoes) {
  const auto traces = read_planetlab_day(MM_CLUSTER_TRACE_DIR);
  ASSERT_EQ(traces.size(), 37u);
  EXPECT_TRUE(std::is_sorted(traces.begin(), traces.end(),
                             [](const auto& a, const auto& b) { return a.name < b.name; }));
  for (const auto& t : traces) {
    ASSERT_EQ(t.percent.size(), 289u);
    EXPECT_EQ(t.percent[288], t.percent[287]);
  }
  // First file, first samples: 24, 34, 29 percent.
  EXPECT_EQ(traces[0].name, "146-179_surfsnel_dsl_internl_net_colostate_557");
  EXPECT_DOUBLE_EQ(traces[0].utilization(0), 0.24);
  EXPECT_DOUBLE_EQ(traces[0].utilization(2), 0.29);
}

TEST(PlanetLabTrace, RefusesMalformedFilesNamingFileAndLine) {
  EXPECT_NO_THROW(read_planetlab_file(write_temp("ok", lines(288))));
  try {
    read_planetlab_file(write_temp("short", lines(287)));
    FAIL() << "short file accepted";
  } catch (const TraceFormatError& e) {
    EXPECT_NE(std::string(e.what()).find("287 samples, expected 288"), std::string::npos);
  }
  try {
    read_planetlab_file(write_temp("word", lines(10) + "abc\n" + lines(277)));
    FAIL() << "non-integer accepted";
  } catch (const TraceFormatError& e) {
    EXPECT_NE(std::string(e.what()).find("word:11"), std::string::npos) << e.what();
  }
  EXPECT_THROW(read_planetlab_file(write_temp("big", lines(5) + "101\n" + lines(282))),
               TraceFormatError);
  EXPECT_THROW(read_planetlab_file(write_temp("neg", lines(5) + "-1\n" + lines(282))),
               TraceFormatError);
  EXPECT_THROW(read_planetlab_file(write_temp("float", lines(5) + "1.5\n" + lines(282))),
               TraceFormatError);
  EXPECT_THROW(read_planetlab_file(write_temp("long", lines(289))), TraceFormatError);
  EXPECT_THROW(read_planetlab_file(write_temp("gap", lines(5) + "\n" + lines(283))),
               TraceFormatError);
  EXPECT_THROW(read_planetlab_file("/nonexistent/trace"), std::runtime_error);
}

TEST(PlanetLabTrace, ListingOrderIsTheFileSystemsOrderOfTheSameFiles) {
  const auto by_name = read_planetlab_day(MM_CLUSTER_TRACE_DIR);
  const auto listed = read_planetlab_day(MM_CLUSTER_TRACE_DIR, FileOrder::listing);
  ASSERT_EQ(listed.size(), by_name.size());
  std::vector<std::string> want;
  for (const auto& e : std::filesystem::directory_iterator(MM_CLUSTER_TRACE_DIR))
    if (e.path().filename() != "README.md") want.push_back(e.path().filename().string());
  for (size_t i = 0; i < listed.size(); ++i) EXPECT_EQ(listed[i].name, want[i]);
  std::vector<std::string> a, b;
  for (const auto& t : listed) a.push_back(t.name);
  for (const auto& t : by_name) b.push_back(t.name);
  std::sort(a.begin(), a.end());
  EXPECT_EQ(a, b);
}
