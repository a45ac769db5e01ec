// DPDK EAL start-up and shutdown, once per process.
#pragma once

#include <string>
#include <vector>

namespace mm::port {

// Throws std::runtime_error with DPDK's reason when rte_eal_init fails.
void init_eal(const std::vector<std::string>& args);
void cleanup_eal();

}  // namespace mm::port
